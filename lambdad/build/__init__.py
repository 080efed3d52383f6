"""From uploaded archive to image: validation, dependency resolution, docker build."""

from lambdad.build.builder import BuildSpec, BuiltImage, ImageBuilder
from lambdad.build.tarball import TarLimits, TarSummary

__all__ = ["BuildSpec", "BuiltImage", "ImageBuilder", "TarLimits", "TarSummary"]
