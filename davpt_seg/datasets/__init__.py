from .camvid import CamVidDataset
from .label_values import (LABEL_VALUES_KEY, RecordLabelValues,
                           distinct_label_values)
from .toy_data import generate_toy_dataset
from .toy_dataset import ToyADE20KDataset
from .transforms import CheckedLoadAnnotations

__all__ = ['CamVidDataset', 'generate_toy_dataset', 'ToyADE20KDataset',
           'CheckedLoadAnnotations', 'RecordLabelValues',
           'distinct_label_values', 'LABEL_VALUES_KEY']
