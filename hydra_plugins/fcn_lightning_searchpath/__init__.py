"""fcn-lightning's Hydra plugin: the folders in ``FCN_CONFIG_PATH`` join the config search
path of its commands (see `fcn_lightning_searchpath`)."""
