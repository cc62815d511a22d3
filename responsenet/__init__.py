"""responsenet: build and benchmark dyadic conversation corpora in the style of ResponseNet."""

__version__ = "0.1.0"

#: Version of the on-disk shard format (see docs/format.md).
FORMAT_VERSION = 1
