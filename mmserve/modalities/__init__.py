"""One module per modality: how its items are checked, decoded and turned into a tower's input batch, with an
error per item that fails (`image`: JPEG/PNG bytes -> uint8 pixels; `text`: UTF-8 -> CLIP token ids)."""
