"""The API: pydantic models of every resource's spec and status and of every workload's config.

The single source of truth: the CRDs are generated from these models, manifests are validated with
them, and the trainer reads its config with them. Pure: importing it imports neither torch nor kopf.
"""

from posttrain.api.align import AlignConfig, AlignRoundSpec
from posttrain.api.common import DataRef, FromRef, ModelRef, Participant
from posttrain.api.data import DataConfig, DataSliceSpec
from posttrain.api.evol import EvolConfig, EvolJobSpec
from posttrain.api.resources import API_VERSION, GROUP, KINDS, VERSION, KindInfo, Resource
from posttrain.api.reward import RewardConfig, RewardModelSpec
from posttrain.api.status import Condition, Output, Progress, Status
from posttrain.api.train import TrainConfig, TrainStageSpec
from posttrain.api.workload import Endpoint, ProgressDocument, Result, ResultOutput, WorkloadConfig

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "AlignConfig",
    "AlignRoundSpec",
    "Condition",
    "DataConfig",
    "DataRef",
    "DataSliceSpec",
    "Endpoint",
    "EvolConfig",
    "EvolJobSpec",
    "FromRef",
    "KindInfo",
    "ModelRef",
    "Output",
    "Participant",
    "Progress",
    "ProgressDocument",
    "Resource",
    "Result",
    "ResultOutput",
    "RewardConfig",
    "RewardModelSpec",
    "Status",
    "TrainConfig",
    "TrainStageSpec",
    "WorkloadConfig",
]
