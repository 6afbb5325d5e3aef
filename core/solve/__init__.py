"""The camera solve on the footage: feature tracks (``tracks.py``) refined into sub-pixel cameras."""
