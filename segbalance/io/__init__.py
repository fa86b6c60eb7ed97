"""Every file format segbalance reads or writes, in one layer (docs/design.md, "Layers").

========================  ==============================================================================
module                    job
========================  ==============================================================================
``io.volume``             :class:`Volume`: a voxel array with spacing, origin and direction
``io.volumes``            read / write NIfTI, NRRD, MHA/MHD (+RAW); a DICOM folder or file via ``io.dicom``
``io.dicom``              DICOM image series: choose, sort by position, check gaps, read in real units
``io.dicom_common``       label maps, SOP classes, copied attributes, the complete-file check
``io.dicom_labels``       DICOM-SEG and RTSTRUCT in: label volumes on an image's grid
``io.rtstruct``           RTSTRUCT contours: rasterize (read) and trace (write)
``io.dicom_seg``          DICOM-SEG out (highdicom)
``io.naming``             output names of a case (PatientID / StudyDate / SeriesDescription or UID)
========================  ==============================================================================

``preprocessing`` (slices, patches, nnU-Net export), ``training`` (prediction), ``evaluation`` and the
commands read and write through these modules; nothing here imports from them. Names are imported on
first use, so ``import segbalance.io`` needs only numpy.
"""

_LAZY = {
    "Volume": "volume",
    "read_volume": "volumes", "write_volume": "volumes", "case_id": "volumes", "volume_format": "volumes",
    "VOLUME_EXTENSIONS": "volumes", "WRITABLE_EXTENSIONS": "volumes",
    "read_dicom_series": "dicom", "write_dicom_series": "dicom", "read_series_headers": "dicom",
    "list_series": "dicom",
    "parse_name_map": "dicom_common", "check_dicom_complete": "dicom_common",
    "DamagedFileError": "dicom_common",
    "read_dicom_label": "dicom_labels", "find_dicom_label": "dicom_labels",
    "rasterize_rtstruct": "rtstruct", "write_rtstruct": "rtstruct",
    "write_dicom_seg": "dicom_seg",
    "case_output_name": "naming",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"segbalance.io.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'segbalance.io' has no attribute {name!r}")
