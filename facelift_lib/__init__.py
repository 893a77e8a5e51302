"""Mouse-FaceLift workbook library: cameras, FaceLift I/O, rendering, the synthetic mouse rig,
preprocessing, GS-LRM and multi-view diffusion. Notebooks in ../notebooks tell the story."""
__version__ = "0.1.0"
