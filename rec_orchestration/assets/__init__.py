"""Software-defined assets, one module per stage, none importing another. They wire: the work lives in
ml/, sources/, db/, publishing/ and SQL."""
