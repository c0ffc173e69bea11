from .proxy_anchor_loss import ProxyAnchorLoss

__all__ = ['ProxyAnchorLoss']
