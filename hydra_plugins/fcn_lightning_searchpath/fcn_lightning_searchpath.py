"""``FCN_CONFIG_PATH``: a user's config folders join the search path of fcn-lightning's
commands, as ``hydra.searchpath=[file:///abs/folder]`` does for one command.

    export FCN_CONFIG_PATH=$HOME/fcn_configs:/shared/team_configs
    fcn-train experiment=my_exp        # $HOME/fcn_configs/experiment/my_exp.yaml

A folder is laid out like the shipped tree (``experiment/``, ``model/``, ``data/``, ...).
The folders come after the shipped tree, in the order given, so they add options and do not
shadow a shipped option of the same name (again as ``hydra.searchpath``).

Hydra imports this module (every module under the ``hydra_plugins`` namespace) for every
Hydra app in the environment, so it changes only the search path of apps whose primary
config tree is fcn-lightning's. It runs before any command's error boundary, so a folder
that does not exist ends the command here with one ``error:`` line and exit status 2, as
the boundary would; a typo then never surfaces later as an unrelated "could not find
experiment/my_exp".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

ENV = "FCN_CONFIG_PATH"


class FCNConfigPathSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        value = os.environ.get(ENV, "")
        if not value.strip() or not _is_fcn_lightning(search_path):
            return
        for folder in config_folders(value):
            search_path.append(provider=ENV, path=f"file://{folder}")


def config_folders(value: str) -> list[Path]:
    """The absolute folders of an ``FCN_CONFIG_PATH`` value (``os.pathsep``-separated;
    empty entries are skipped); a missing one ends the process with an ``error:`` line."""
    folders = []
    for entry in value.split(os.pathsep):
        if not entry.strip():
            continue
        folder = Path(entry).expanduser().resolve()
        if not folder.is_dir():
            problem = "is not a folder" if folder.exists() else "does not exist"
            print(
                f"error: {ENV}: {folder} {problem} (the variable lists config folders, "
                f"separated by '{os.pathsep}')",
                file=sys.stderr,
            )
            raise SystemExit(2)
        folders.append(folder)
    return folders


def _is_fcn_lightning(search_path: ConfigSearchPath) -> bool:
    """Whether the app's primary config tree (the ``main`` search-path entry) is ours."""
    try:
        from fcn_lightning.run.config import CONF_DIR
    except ImportError:
        return False
    ours = os.path.realpath(CONF_DIR)
    for element in search_path.get_path():
        if element.provider != "main" or element.path is None:
            continue
        if element.path == "pkg://fcn_lightning.conf":
            return True
        path = element.path.removeprefix("file://")
        if "://" not in path and os.path.realpath(path) == ours:
            return True
    return False
