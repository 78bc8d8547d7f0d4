"""Read and write PASCAL VOC ``Annotations/<id>.xml`` files (docs/ALGORITHMS.md §9.1).

Only the parts the pipeline uses are modelled: the image file name and size and, per
``<object>``, its class ``name``, ``bndbox`` (``xmin, ymin, xmax, ymax``), ``difficult`` and
``truncated`` flags. Box coordinates follow the VOC devkit convention: 1-based, inclusive
pixel indices, i.e. the top-left pixel of the image is ``(1, 1)`` and a box covering the pixel
columns ``c0..c1`` (0-based) has ``xmin = c0 + 1, xmax = c1 + 1``. Part boxes
(``<part><bndbox>`` inside ``person`` objects) are ignored. A few VOC files write coordinates
as decimals ("273.5"); they are rounded to the nearest integer.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from pipeline.data.errors import DatasetError

__all__ = ["VocObject", "VocAnnotation", "read_voc_xml", "write_voc_xml", "xml_class_names"]

XML_FIX = ("repair or replace the file, or delete it (the id's image labels then come from its "
           "mask)")


@dataclass(frozen=True)
class VocObject:
    """One annotated object: class name, 1-based inclusive box (or None), flags."""

    name: str
    bbox: tuple[int, int, int, int] | None = None
    difficult: bool = False
    truncated: bool = False


@dataclass
class VocAnnotation:
    """The content of one annotation file (``width``/``height`` None when absent)."""

    filename: str
    width: int | None = None
    height: int | None = None
    depth: int | None = 3
    objects: list[VocObject] = field(default_factory=list)
    segmented: bool = False
    folder: str = "VOC2012"


def _text(elem: ET.Element | None, tag: str) -> str | None:
    child = None if elem is None else elem.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip()


def _int(path, elem: ET.Element | None, tag: str, default: int | None = None) -> int | None:
    txt = _text(elem, tag)
    if txt is None or txt == "":
        return default
    try:
        return int(round(float(txt)))
    except ValueError as exc:
        raise DatasetError(f"{path}: <{tag}> is not a number: {txt!r}: {XML_FIX}") from exc


def read_voc_xml(path: str | os.PathLike) -> VocAnnotation:
    """Parse a VOC annotation file; raise :class:`~pipeline.data.errors.DatasetError` (a
    ``ValueError``) naming ``path`` and the fix if it is malformed."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DatasetError(f"{path}: unreadable VOC annotation XML ({exc}): {XML_FIX}") from exc
    if root.tag != "annotation":
        raise DatasetError(f"{path}: root element is <{root.tag}>, expected <annotation>: {XML_FIX}")
    size = root.find("size")
    objects = []
    for i, obj in enumerate(root.findall("object")):
        name = _text(obj, "name")
        if not name:
            raise DatasetError(f"{path}: <object> #{i} has no <name>: add its class name "
                               f"(<name>cat</name>) or delete the <object>")
        box_el = obj.find("bndbox")
        bbox = None
        if box_el is not None:
            coords = [_int(path, box_el, t) for t in ("xmin", "ymin", "xmax", "ymax")]
            if any(c is None for c in coords):
                raise DatasetError(f"{path}: <object> #{i} ({name}) has an incomplete <bndbox>: "
                                   f"give xmin, ymin, xmax and ymax, or delete the <bndbox>")
            bbox = tuple(coords)
        objects.append(VocObject(
            name=name, bbox=bbox,
            difficult=bool(_int(path, obj, "difficult", 0)),
            truncated=bool(_int(path, obj, "truncated", 0)),
        ))
    return VocAnnotation(
        filename=_text(root, "filename") or "",
        width=_int(path, size, "width"),
        height=_int(path, size, "height"),
        depth=_int(path, size, "depth", 3),
        objects=objects,
        segmented=bool(_int(path, root, "segmented", 0)),
        folder=_text(root, "folder") or "",
    )


def xml_class_names(path: str | os.PathLike) -> list[str]:
    """Class names of all objects in ``path`` (difficult ones included), in file order."""
    return [o.name for o in read_voc_xml(path).objects]


def _sub(parent: ET.Element, tag: str, text) -> ET.Element:
    el = ET.SubElement(parent, tag)
    el.text = str(text)
    return el


def write_voc_xml(path: str | os.PathLike, ann: VocAnnotation) -> None:
    """Write ``ann`` in the VOC devkit layout (deterministic bytes for equal input)."""
    root = ET.Element("annotation")
    _sub(root, "folder", ann.folder)
    _sub(root, "filename", ann.filename)
    src = ET.SubElement(root, "source")
    _sub(src, "database", "The VOC2012 Database")
    if ann.width is not None and ann.height is not None:
        size = ET.SubElement(root, "size")
        _sub(size, "width", int(ann.width))
        _sub(size, "height", int(ann.height))
        _sub(size, "depth", int(ann.depth or 3))
    _sub(root, "segmented", int(bool(ann.segmented)))
    for obj in ann.objects:
        el = ET.SubElement(root, "object")
        _sub(el, "name", obj.name)
        _sub(el, "pose", "Unspecified")
        _sub(el, "truncated", int(bool(obj.truncated)))
        _sub(el, "difficult", int(bool(obj.difficult)))
        if obj.bbox is not None:
            box = ET.SubElement(el, "bndbox")
            for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), obj.bbox):
                _sub(box, tag, int(v))
    ET.indent(root, space="\t")
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=False)
