from .camvid import CamVidDataset
from .toy_data import generate_toy_dataset
from .toy_dataset import ToyADE20KDataset
from .transforms import CheckedLoadAnnotations

__all__ = ['CamVidDataset', 'generate_toy_dataset', 'ToyADE20KDataset',
           'CheckedLoadAnnotations']
