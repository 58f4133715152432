"""zray: photometric redshifts from galaxy cutouts, trained and tuned on Ray."""

__version__ = "0.1.0"
