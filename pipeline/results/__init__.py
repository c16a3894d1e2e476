"""What people read after training: the 5-fold report (`mma report`) and predictions on their
own videos (`mma predict`). May import: `core`, `weights`, `data`, `prep`, `store`, `engine`."""
