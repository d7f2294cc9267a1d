"""CRNN text recognizer: VGG-style CNN + two bidirectional LSTMs + CTC."""
