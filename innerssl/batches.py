"""How SSL training batches are laid out: the contract between the datamodule (which makes them), the SSL modules
and the monitors (which read them). Beside the layers, so that SSL methods need nothing from innerssl.data."""

SSL_BATCH_KEY = "ssl"
"""Training batch key of the SSL batch ``(views, labels)``: ``views`` is a sequence of ``(B, C, H, W)`` batches,
one per view, in the order of the method's view groups (``SSLModule.view_groups``); views of different groups
may differ in size."""
LINEAR_HEAD_BATCH_KEY = "linear_head"
"""Training batch key of the linear-head monitor's labeled batch ``(images, labels)``."""
SSL_VAL_DATALOADER_INDEX = 0
LINEAR_HEAD_VAL_DATALOADER_INDEX = 1
