"""The error of an image that cannot be read, in its own module: image_io raises it and image_checks derives
its content errors from it, so neither of the two imports the other's error (no import circle)."""
from __future__ import annotations

from diffoseg_auto.errors import UserError


class ImageReadError(UserError, RuntimeError):
    """An image file that is missing, of an unsupported type, unreadable or damaged (the message names it)."""
