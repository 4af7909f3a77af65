"""The special tokens every tokenizer has (a leaf module: the tokenizers and their registry import it).

``<blank>`` is id 0 (the CTC and transducer blank), ``<unk>`` id 1, and ``<sos/eos>`` the last
id (one symbol for start and end, as in ESPnet).
"""

BLANK = "<blank>"
UNK = "<unk>"
SOS_EOS = "<sos/eos>"
