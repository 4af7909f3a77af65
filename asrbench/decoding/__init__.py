"""Searches: CTC prefix beam search and a flashlight wrapper, attention beam search, transducer
greedy and modified beam search; ``searchers`` picks one from the decoding options."""
