"""From uploaded archive to image: validation, dependency resolution, docker build."""

from lambdad.build.artifacts import ArtifactStore
from lambdad.build.builder import BuildSpec, BuiltImage, ImageBuilder
from lambdad.build.depcache import DepsCache
from lambdad.build.limits import BuildLimits
from lambdad.build.tarrules import TarLimits, TarSummary

__all__ = ["ArtifactStore", "BuildLimits", "BuildSpec", "BuiltImage", "DepsCache",
           "ImageBuilder", "TarLimits", "TarSummary"]
