"""Integrations with the libraries that launch kernels on RocmStreams (Numba), registered with
the backend layer's selection hook; nothing below imports them."""
