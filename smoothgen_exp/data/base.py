"""What every dataset is: a sequence of items (condition, label) with stable ids."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Item:
    item_id: str       # stable across runs, processes and resumes: seeds derive from it
    condition: str     # the prompt (or a description of the image the dataset holds for it)
    label: int         # the class the item asks for (-1: none)


class ItemList:
    """Sequence protocol over `self.items` (subclasses fill it)."""

    items: list[Item]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Item:
        return self.items[i]

    def __iter__(self):
        return iter(self.items)
