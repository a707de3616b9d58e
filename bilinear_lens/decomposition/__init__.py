"""Weight-based decomposition of bilinear layers: interaction matrices, eigen, HOSVD, trees."""
