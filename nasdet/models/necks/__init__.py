"""Necks with configurable parameter sharing."""

from nasdet.models.necks.sharing_fpn import SharingFPN

__all__ = ["SharingFPN"]
