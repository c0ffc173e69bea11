from .checkpoint_encoder_decoder import CheckpointEncoderDecoder

__all__ = ['CheckpointEncoderDecoder']
