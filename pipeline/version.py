"""edgepipe's version, in the base layer so that every part can record it without importing the package facade."""

__version__ = "0.1.0"
