"""Datasets: sources, formats, mixing, tokenization with loss masks, packing."""
