"""One module per dataset; each registers its builder in ``innerssl.registry.DATASETS``."""
