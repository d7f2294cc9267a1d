"""Text recognition data: the LMDB layout, converters into it, samples and alphabets."""
