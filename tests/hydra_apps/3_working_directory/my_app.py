# Copyright (c) Facebook, Inc. and its affiliates. All Rights Reserved
import os

from omegaconf import DictConfig

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main()
def my_app(_cfg: DictConfig) -> None:
    print(f"Working directory : {os.getcwd()}")
    print(f"Output directory  : {HydraConfig.get().runtime.output_dir}")


if __name__ == "__main__":
    my_app()
