"""JupyterLab settings for this repository, used with

    .venv/bin/jupyter lab --config=jupyter/jupyter_server_config.py notebooks/     (add --allow-root as root)

- Double-clicking a `notebooks/*.py` opens it as a notebook (jupytext's "Jupytext Notebook" viewer as the
  default viewer of Python files: `lab-settings/overrides.json`, the setting `jupytext-config
  set-default-viewer python` would write into your user settings; here it stays with the repository).
- Saving a notebook drops widget views and saved widget state (`facelift_lib.workbook.drop_widget_views`):
  a widget only lives as long as its kernel, and a saved view reopens as "Error displaying widget: model
  not found".
Your own ~/.jupyter settings still apply; only the app-level overrides come from here.
"""
import warnings
from pathlib import Path

c = get_config()  # noqa: F821 - provided by traitlets when Jupyter loads this file

c.LabApp.app_settings_dir = str(Path(__file__).resolve().parent / "lab-settings")


def drop_widget_views_before_save(model, **kwargs):
    """pre_save_hook: a notebook model loses its widget views before it is written (both files of a pair)."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    import nbformat

    from facelift_lib.workbook import drop_widget_views

    nb = nbformat.from_dict(model["content"])
    if drop_widget_views(nb):
        model["content"] = nb


c.ContentsManager.pre_save_hook = drop_widget_views_before_save
# jupytext's contents manager applies the config twice; the second time traitlets warns about the first hook
warnings.filterwarnings("ignore", message="Overriding existing pre_save_hook")
