"""CIFAR-100: the official python files, downloaded through torchvision or found in a folder."""
from __future__ import annotations

from pathlib import Path

from cnnlab.datasources import DataSource, SourceRequest
from cnnlab.errors import DataError



def is_cifar_folder(path: Path) -> bool:
    from cnnlab.data.cifar import is_cifar_folder as detect

    return detect(path)


def read_downloaded(req: SourceRequest):
    from cnnlab.data.cifar import download_cifar100, read_cifar100

    if not is_cifar_folder(req.path):
        if not req.cfg.download:
            raise DataError(f"CIFAR-100 is not in {req.path} and data.download is false; "
                            f"put cifar-100-python/ there or pass --data PATH")
        download_cifar100(req.path)
    return read_cifar100(req.path, req.cfg.num_classes)


def read_folder(req: SourceRequest):
    from cnnlab.data.cifar import read_cifar100

    if not is_cifar_folder(req.path):
        raise DataError(f"{req.path}: does not look like a 'cifar100-folder' dataset "
                        f"({SOURCES[1].description})")
    return read_cifar100(req.path, req.cfg.num_classes)


SOURCES = [
    # never detected: it is what `--data` left out means (and downloads)
    DataSource("cifar100", "official CIFAR-100, downloaded through torchvision into the cache folder",
               read=read_downloaded),
    DataSource("cifar100-folder", "a local folder holding the official cifar-100-python/ files",
               read=read_folder, detect=is_cifar_folder, order=30),
]
