"""Chest X-ray ingestion: readers, labelled sources, the grouped split and `xpgan prep cxr`."""
