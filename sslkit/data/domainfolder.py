"""Image folders with a domain level, PACS style: ``root/<domain>/<class>/<image>``."""

from __future__ import annotations

import torch

from sslkit.data.imagefolder import FolderImages, ImageFolder, check_seen, class_folders
from sslkit.errors import DataError


class DomainFolder(ImageFolder):
    """Every image carries its class and its domain (the batch's ``domain`` field, ids in the
    sorted order of the domain folders). ``test_domains`` are held out: pretraining and the probe
    use the other domains, the test split those (leave-domains-out, as PACS is evaluated); with
    no ``test_domains`` every split holds every domain in ``domains`` (default: all folders).
    Classes are numbered by name over the class folders of every domain used (a domain may lack
    a class); a class with test images but none in the training domains is refused."""

    name = "domainfolder"

    def __init__(self, domains: list[str] | None = None, test_domains: list[str] | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.domains = list(domains) if domains else None
        self.test_domains = list(test_domains or [])

    def load_split(self, split: str) -> FolderImages:
        if not self.root.is_dir():
            raise DataError(f"domain folder tree not found: {self.root} (expected "
                            f"{self.root}/<domain>/<class>/<image>)")
        found = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        self.domain_names = found  # domain id -> folder name
        chosen = self.domains or found
        unknown = sorted(set(chosen + self.test_domains) - set(found))
        if unknown:
            raise DataError(f"{self.root}: no folder for domains {unknown}; found {found}")
        if split == "train":
            use = [d for d in chosen if d not in self.test_domains]
        else:
            use = self.test_domains or chosen
        if not use:
            raise DataError(f"data.test_domains={self.test_domains} leaves no training domain")
        classes = (list(self.classes) if self.classes is not None else
                   sorted({c for d in set(chosen + self.test_domains) for c in class_folders(self.root / d)}))
        parts = [FolderImages(self.root / d, self.load_size, classes, self.decoder,
                              require_classes=self.classes is not None) for d in use]
        domains = torch.cat([torch.full((len(p),), found.index(d), dtype=torch.long)
                             for p, d in zip(parts, use)])
        data = parts[0]
        data.samples = [s for p in parts for s in p.samples]
        data.labels = torch.cat([p.labels for p in parts])
        data.domains = domains
        self.num_classes = len(classes)
        if split != self.probe_source:
            check_seen(data, self.split(self.probe_source), f"{self.root} (domains {use})",
                       f"the training domains of {self.root}")
        return data
