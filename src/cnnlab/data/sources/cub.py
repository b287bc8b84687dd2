"""Caltech-UCSD Birds in its three layouts (data/birds.py reads them): streamed from disk."""
from __future__ import annotations

from pathlib import Path

from cnnlab.data.birds import detect_layout
from cnnlab.datasources import DataSource, SourceRequest


def read(layout: str):
    def read_layout(req: SourceRequest):
        from cnnlab.data.birds import read_listed
        from cnnlab.data.classfolder import LabelledFiles
        from cnnlab.data.loading import named_image_size, streamed_splits

        listed = read_listed(req.path, layout)
        files = [LabelledFiles(images.paths, images.labels, listed.class_names, req.path)
                 for images in (listed.train, listed.test)]
        # bird lists stream unless data.cache asks (None or false), at the weights' size or 224
        return streamed_splits(req, listed.description, files[0], test=files[1], cache=bool(req.cfg.cache),
                               size=named_image_size(req.cfg, req.preprocessing) or 224)

    return read_layout


def detects(layout: str):
    return lambda path: detect_layout(path) == layout


SOURCES = [
    DataSource("cub200-2011", "CUB-200-2011 as distributed: images.txt, image_class_labels.txt, train_test_split.txt, "
               "classes.txt, images/", read=read("cub200-2011"), detect=detects("cub200-2011"), order=60),
    DataSource("cub200-2010", "CUB-200 as distributed: images/ + lists/train.txt, lists/test.txt",
               read=read("cub200-2010"), detect=detects("cub200-2010"), order=61),
    DataSource("cub-lab", "class folders NNN.Name/ beside train.txt and test.txt (the lab's birds)",
               read=read("cub-lab"), detect=detects("cub-lab"), order=62),
]
