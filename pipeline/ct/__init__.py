"""CT ingestion: readers (NIfTI, DICOM series), archive discovery, checks, resize and `xpgan prep drr`."""
