"""The simulator's models of the AFE chips, one module per chip (named as its folder in lib/bms/afe/)."""
