"""The class-incremental image-classification benchmark (the SWR paper's ViT experiment, finding A12).

``config`` (the run's dataclass, presets, validation), ``data`` (CIFAR-100, CIFAR-10 and any
ImageFolder tree as uint8 tensors; splits, class orders), ``augment`` (batched augmentation on
the training device), ``methods`` (the plasticity methods on the ViT), ``train`` (the trainer),
``report`` (what the chapter reads) and ``bench`` (``python -m lop_core bench vit``). The model is
``lop_core.models.vit``. Nothing is imported here, so that ``lop_core.config`` can import
``vision.config`` without loading the rest.
"""
