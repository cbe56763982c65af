"""Functional forms of the seqkern ops (recurrent layers and cells, max pooling)."""
