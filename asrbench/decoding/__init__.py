"""Beam-search decoders for CTC outputs: our prefix beam search and a flashlight wrapper."""
