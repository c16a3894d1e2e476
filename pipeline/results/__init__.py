"""What people read after training: the 5-fold report (`mma report`) and predictions on their
own videos (`mma predict`). May import: `core`, `data`, `prep`, `store`, `engine`."""
