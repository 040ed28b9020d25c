"""Demo configs with a ViT encoder on the embedded synthetic radiographs (64 px), on a laptop CPU."""

from configs.demo import DemoBYOL, DemoClassifier


class DemoViTBYOL(DemoBYOL):
    """BYOL with a ViT-Ti (16 px patches: 16 tokens of the 64 px demo images), DemoBYOL's data and monitors."""

    ssl_encoder = "timm:vit_tiny_patch16_224"
    encoder_options = ["img_size=64", "patch_size=16"]
    # ViTs train with a smaller AdamW step and a larger weight decay than the demo's ResNet-18.
    learning_rate = 5e-4
    weight_decay = 0.05


class DemoViTSimCLR(DemoViTBYOL):
    """SimCLR with DemoViTBYOL's ViT-Ti; the head of DemoSimCLR."""

    ssl_training_type = "SimCLR"
    projection_hidden_dim = 512


class DemoViTDINO(DemoViTBYOL):
    """DINO with multi-crop (2 global views, 6 local crops of 28 px) and DemoViTBYOL's ViT-Ti.

    The local crops are smaller than the global views: the ViT interpolates its position embeddings to their grid
    and pads them to whole patches.
    """

    ssl_training_type = "DINO"
    encoder_options = ["img_size=64", "patch_size=16", "dynamic_img_size=true", "dynamic_img_pad=true"]
    dino_output_dim = 2048
    dino_num_local_crops = 6
    # Few optimizer steps in a demo: a faster-moving teacher than DINO's usual 0.996.
    dino_base_momentum = 0.9


class DemoMAE(DemoBYOL):
    """MAE with a tiny ViT (8 px patches: 64 tokens) on the demo radiographs, monitored by DemoBYOL's linear head.

    The paper's recipe scaled to a demo: AdamW with weight decay 0.05, a narrow two-block decoder, and a learning
    rate well above the paper's 1.5e-4 x batch/256 (which needs hundreds of epochs); the mae_checks pictures of
    every second epoch show the reconstructions improve.
    """

    ssl_training_type = "MAE"
    ssl_encoder = "timm:vit_tiny_patch16_224"
    encoder_options = ["img_size=64", "patch_size=8"]
    num_epochs = 10
    warmup_epochs = 1
    learning_rate = 1e-3
    weight_decay = 0.05
    mae_decoder_dim = 128
    mae_decoder_depth = 2
    mae_decoder_num_heads = 4
    mae_checks_every_n_epochs = 2
    mae_checks_num_images = 4


class DemoViTClassifier(DemoClassifier):
    """Classifier of the demo opacity label from a DemoMAE checkpoint (--local_weights_path): the same ViT."""

    ssl_encoder = DemoMAE.ssl_encoder
    encoder_options = DemoMAE.encoder_options
    # Fine-tuning a ViT wants a smaller step than DemoClassifier's ResNet (--freeze_encoder=true tolerates 1e-2).
    learning_rate = 1e-3
    weight_decay = 0.05
