"""Software-defined assets, one module per stage. The work lives in ml/, sources/ and SQL."""
