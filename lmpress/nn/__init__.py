from lmpress.nn.qlinear import QLinear

__all__ = ["QLinear"]
