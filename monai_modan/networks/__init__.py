"""Networks: the ResNet-18 encoder variants, pretraining heads (contrastive, hybrid, supervised, SparK), and encoder
export/import."""

from .encoder import (
    ContrastiveModel,
    HybridModel,
    HybridOutput,
    ResNet18Encoder,
    StemType,
    SupervisedModel,
    build_encoder,
    projection_head,
    stem_kwargs,
)
from .export import (
    CheckpointError,
    ExportFormat,
    encoder_state_dict,
    export_encoder,
    from_torchvision_state_dict,
    load_encoder,
    refuse_torchscript,
    to_torchvision_state_dict,
)
from .spark import (
    Densify,
    MaskPyramid,
    RandomPatchMask,
    SparKDecoder,
    SparKModel,
    SparKOutput,
    UpsampleBlock,
    encoder_downsampling,
    sparse_batch_norm,
    sparse_resnet_features,
)
