"""The paper's reported numbers that reports and experiment tables print next to ours."""

from __future__ import annotations

# Paper Table 1 (MMA rows): {dataset: {S: (UAR, WAR, UAR*, WAR*)}}, * = 2-clip average.
PAPER_TABLE1: dict[str, dict[int, tuple[float, float, float, float]]] = {
    "dfew": {112: (64.24, 75.40, 64.35, 75.48), 160: (66.61, 77.15, 66.51, 77.10), 224: (67.01, 77.51, 66.85, 77.43)},
    "mafw": {112: (43.34, 56.46, 43.29, 56.60), 160: (44.19, 57.90, 44.07, 57.85), 224: (44.11, 58.52, 44.25, 58.45)},
}
