"""The registry of CAM methods: short name -> method class."""

from __future__ import annotations

from keras_cam.methods.ablation_cam import AblationCAM
from keras_cam.methods.attention import AttentionMethod
from keras_cam.methods.base import CAMMethod, Forward
from keras_cam.methods.cam import CAM
from keras_cam.methods.deep_feature_factorization import DeepFeatureFactorization
from keras_cam.methods.eigen_cam import EigenCAM
from keras_cam.methods.eigen_grad_cam import EigenGradCAM
from keras_cam.methods.fem import FEM
from keras_cam.methods.finer_cam import FinerCAM
from keras_cam.methods.fullgrad import FullGrad
from keras_cam.methods.grad_cam import GradCAM
from keras_cam.methods.grad_cam_elementwise import GradCAMElementWise
from keras_cam.methods.grad_cam_plus_plus import GradCAMPlusPlus
from keras_cam.methods.gradient_rollout import GradientRollout
from keras_cam.methods.guided_backprop import GuidedBackprop, GuidedGradCAM
from keras_cam.methods.hires_cam import HiResCAM
from keras_cam.methods.is_cam import ISCAM
from keras_cam.methods.kpca_cam import KPCACAM
from keras_cam.methods.layer_cam import LayerCAM
from keras_cam.methods.legrad import LeGrad
from keras_cam.methods.random_cam import RandomCAM
from keras_cam.methods.refine_cam import RefineCAM
from keras_cam.methods.registry import available_methods, get_method, register
from keras_cam.methods.rollout import AttentionRollout
from keras_cam.methods.score_cam import ScoreCAM
from keras_cam.methods.seg_eigen_cam import SegEigenCAM
from keras_cam.methods.sess import SESS
from keras_cam.methods.shapley_cam import ShapleyCAM
from keras_cam.methods.smooth_grad_cam_plus_plus import SmoothGradCAMPlusPlus
from keras_cam.methods.sobel_cam import SobelCAM
from keras_cam.methods.ss_cam import SSCAM
from keras_cam.methods.xgrad_cam import XGradCAM

for _method in (
    GradCAM,
    CAM,
    GradCAMPlusPlus,
    XGradCAM,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    EigenCAM,
    AblationCAM,
    FEM,
    GradCAMElementWise,
    EigenGradCAM,
    RandomCAM,
    SobelCAM,
    KPCACAM,
    SSCAM,
    ISCAM,
    SmoothGradCAMPlusPlus,
    FinerCAM,
    SegEigenCAM,
    ShapleyCAM,
    FullGrad,
    GuidedBackprop,
    GuidedGradCAM,
    RefineCAM,
    SESS,
    AttentionRollout,
    GradientRollout,
    LeGrad,
    DeepFeatureFactorization,
):
    register(_method)

__all__ = [
    "CAM",
    "FEM",
    "ISCAM",
    "KPCACAM",
    "SESS",
    "SSCAM",
    "AblationCAM",
    "AttentionMethod",
    "AttentionRollout",
    "CAMMethod",
    "DeepFeatureFactorization",
    "EigenCAM",
    "EigenGradCAM",
    "FinerCAM",
    "Forward",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GradientRollout",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "LeGrad",
    "RandomCAM",
    "RefineCAM",
    "ScoreCAM",
    "SegEigenCAM",
    "ShapleyCAM",
    "SmoothGradCAMPlusPlus",
    "SobelCAM",
    "XGradCAM",
    "available_methods",
    "get_method",
    "register",
]
