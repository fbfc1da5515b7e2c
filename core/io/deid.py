"""De-identification on display: which identifying attributes a DICOM file has, and a safe summary.

Identifying values are read raw and never converted by pydicom: its validation quotes a malformed
value in a warning and a log record, and warnings are process-wide, so another session could print
it. Values leave this module only when the caller asks (``keep=True``).
"""

from __future__ import annotations

import numpy as np

#: DICOM attributes named by the PS3.15 Annex E basic application level confidentiality
#: profile that can identify a patient, a clinician, an institution or a study.
IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime",
    "PatientBirthName", "PatientMotherBirthName", "OtherPatientIDs", "OtherPatientIDsSequence",
    "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers", "PatientAge",
    "PatientSex", "PatientSize", "PatientWeight", "MedicalRecordLocator", "EthnicGroup",
    "Occupation", "AdditionalPatientHistory", "PatientComments", "PatientReligiousPreference",
    "MilitaryRank", "BranchOfService", "CountryOfResidence", "RegionOfResidence",
    "PatientInsurancePlanCodeSequence", "ResponsiblePerson", "ResponsibleOrganization",
    "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime",
    "AcquisitionDate", "AcquisitionTime", "ContentDate", "ContentTime", "AcquisitionDateTime",
    "InstanceCreationDate", "InstanceCreationTime",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "InstitutionCodeSequence", "ReferringPhysicianName", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "PhysiciansOfRecord", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "OperatorsName", "RequestingPhysician",
    "RequestingService", "ScheduledPerformingPhysicianName", "StationName",
    "DeviceSerialNumber", "PlateID", "DetectorID", "GantryID", "CassetteID",
    "StudyDescription", "SeriesDescription", "ImageComments", "RequestAttributesSequence",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription",
    "ScheduledProcedureStepDescription", "RequestedProcedureDescription",
    "ProtocolName", "DerivationDescription", "AdmittingDiagnosesDescription",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
    "MediaStorageSOPInstanceUID", "ReferencedSOPInstanceUID", "IrradiationEventUID",
    "ContentSequence", "TextValue", "PersonName", "VerifyingObserverName",
    "VerifyingOrganization", "ContributionDescription", "TextComments", "TextString",
    "PatientState", "Allergies",
    "PregnancyStatus", "SmokingStatus", "LastMenstrualDate",
)


def identifiers(ds, keep: bool) -> tuple[tuple[str, ...], dict]:
    """(keywords of the identifying attributes present, their values if ``keep`` else {})."""
    hidden = []
    values = {}
    for keyword in IDENTIFYING_KEYWORDS:
        if _has_value(ds, keyword):
            hidden.append(keyword)
            if keep:
                values[keyword] = _raw_text(ds, keyword)
    private = sum(1 for tag in ds.keys() if tag.is_private)
    if private:
        hidden.append(f"private tags ({private})")
    return tuple(hidden), values


def _has_value(ds, keyword: str) -> bool:
    """Present and not empty, judged on the raw bytes: converting would validate, and quote, the value."""
    if keyword not in ds:
        return False
    value = ds.get_item(keyword).value
    if isinstance(value, (bytes, bytearray)):
        return bool(bytes(value).strip(b" \x00"))
    return value not in (None, "")


def _raw_text(ds, keyword: str) -> str:
    """An identifying value as text, decoded from its raw bytes."""
    from pydicom.charset import convert_encodings, decode_bytes
    from pydicom.datadict import dictionary_VR

    if dictionary_VR(keyword) == "SQ":
        return "(sequence)"
    value = ds.get_item(keyword).value
    if not isinstance(value, (bytes, bytearray)):
        return str(value)  # already converted by the caller of pydicom, not by us
    encodings = convert_encodings(getattr(ds, "original_character_set", None) or "ISO_IR 6")
    return decode_bytes(bytes(value), encodings, {0x5C}).strip(" \x00")


_SUMMARY_KEYWORDS = (
    "Modality", "BodyPartExamined", "ViewPosition", "PhotometricInterpretation",
    "Manufacturer", "ManufacturerModelName", "BitsStored", "SliceThickness",
    "KVP", "MagneticFieldStrength", "RescaleSlope", "RescaleIntercept",
    "WindowCenter", "WindowWidth",
)


def summary(ds, pixels: np.ndarray, spacing) -> dict:
    """A header summary with no identifying attribute: what a reader wants to know about the image."""
    result = {}
    for keyword in _SUMMARY_KEYWORDS:
        value = ds.get(keyword)
        if value not in (None, ""):
            result[keyword] = _plain(value)
    result["Rows"] = int(pixels.shape[1])
    result["Columns"] = int(pixels.shape[2])
    result["Frames"] = int(pixels.shape[0])
    result["Pixel spacing (mm)"] = f"{spacing[0]:.4g} x {spacing[1]:.4g}" if spacing else "not stated"
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if syntax is not None:
        result["Transfer syntax"] = syntax.name
    sop = ds.get("SOPClassUID")
    if sop is not None:
        result["SOP class"] = getattr(sop, "name", str(sop))
    return result


def _plain(value):
    if hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, (int, float, str)):
        return value
    return str(value)
