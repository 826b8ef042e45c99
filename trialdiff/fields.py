"""The field registry: which part of an API v2 record each public field path names.

`FIELDS` is the one place the spec's table (docs/field-paths.md) lives in code; extraction,
ordering, the reports and the README's list of paths are all derived from it.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

FieldKind = Literal["value", "date", "text", "list"]


class Field(NamedTuple):
    """One tracked field: its public path, its source in the record, and how to show it."""

    path: str
    source: str  # dotted; `P.` abbreviates `protocolSection.`
    kind: FieldKind = "value"  # date: shifts in days; text: word diff; list: item by item
    item_key: str = ""  # for lists of objects: the key that names an item in reports


# The spec's table, in the spec's order (rule 7 orders report lines by it).
FIELDS: Final[tuple[Field, ...]] = (
    Field("status.completionDate", "P.statusModule.completionDateStruct", "date"),
    Field("status.lastKnownStatus", "P.statusModule.lastKnownStatus"),
    Field("status.lastUpdatePostDate", "P.statusModule.lastUpdatePostDateStruct", "date"),
    Field("status.overallStatus", "P.statusModule.overallStatus"),
    Field("status.primaryCompletionDate", "P.statusModule.primaryCompletionDateStruct", "date"),
    Field("status.resultsFirstPostDate", "P.statusModule.resultsFirstPostDateStruct", "date"),
    Field("status.startDate", "P.statusModule.startDateStruct", "date"),
    Field("status.statusVerifiedDate", "P.statusModule.statusVerifiedDate", "date"),
    Field("status.studyFirstPostDate", "P.statusModule.studyFirstPostDateStruct", "date"),
    Field("status.whyStopped", "P.statusModule.whyStopped", "text"),
    Field("status.expandedAccess", "P.statusModule.expandedAccessInfo"),
    Field("status.delayedPosting", "P.statusModule.delayedPosting"),
    Field("status.resultsWaived", "P.statusModule.resultsWaived"),
    Field("status.dispFirstPostDate", "P.statusModule.dispFirstPostDateStruct", "date"),
    Field("design.phases", "P.designModule.phases", "list"),
    Field("design.enrollmentCount", "P.designModule.enrollmentInfo.count"),
    Field("design.enrollmentType", "P.designModule.enrollmentInfo.type"),
    Field("design.studyType", "P.designModule.studyType"),
    Field("design.allocation", "P.designModule.designInfo.allocation"),
    Field("design.interventionModel", "P.designModule.designInfo.interventionModel"),
    Field(
        "design.interventionModelDescription",
        "P.designModule.designInfo.interventionModelDescription",
        "text",
    ),
    Field("design.primaryPurpose", "P.designModule.designInfo.primaryPurpose"),
    Field("design.masking", "P.designModule.designInfo.maskingInfo.masking"),
    Field(
        "design.maskingDescription",
        "P.designModule.designInfo.maskingInfo.maskingDescription",
        "text",
    ),
    Field("design.whoMasked", "P.designModule.designInfo.maskingInfo.whoMasked", "list"),
    Field("design.observationalModel", "P.designModule.designInfo.observationalModel"),
    Field("design.timePerspective", "P.designModule.designInfo.timePerspective"),
    Field("design.bioSpec", "P.designModule.bioSpec"),
    Field("design.patientRegistry", "P.designModule.patientRegistry"),
    Field("design.targetDuration", "P.designModule.targetDuration"),
    Field("design.expandedAccessTypes", "P.designModule.expandedAccessTypes"),
    Field("eligibility.criteria", "P.eligibilityModule.eligibilityCriteria", "text"),
    Field("eligibility.sex", "P.eligibilityModule.sex"),
    Field("eligibility.healthyVolunteers", "P.eligibilityModule.healthyVolunteers"),
    Field("eligibility.minimumAge", "P.eligibilityModule.minimumAge"),
    Field("eligibility.maximumAge", "P.eligibilityModule.maximumAge"),
    Field("eligibility.stdAges", "P.eligibilityModule.stdAges", "list"),
    Field("eligibility.genderBased", "P.eligibilityModule.genderBased"),
    Field("eligibility.genderDescription", "P.eligibilityModule.genderDescription", "text"),
    Field("eligibility.studyPopulation", "P.eligibilityModule.studyPopulation", "text"),
    Field("eligibility.samplingMethod", "P.eligibilityModule.samplingMethod"),
    Field("outcomes.primary", "P.outcomesModule.primaryOutcomes", "list", "measure"),
    Field("outcomes.secondary", "P.outcomesModule.secondaryOutcomes", "list", "measure"),
    Field("outcomes.other", "P.outcomesModule.otherOutcomes", "list", "measure"),
    Field("armsInterventions.arms", "P.armsInterventionsModule.armGroups", "list", "label"),
    Field(
        "armsInterventions.interventions",
        "P.armsInterventionsModule.interventions",
        "list",
        "name",
    ),
    Field("sponsor.lead", "P.sponsorCollaboratorsModule.leadSponsor"),
    Field("sponsor.collaborators", "P.sponsorCollaboratorsModule.collaborators", "list", "name"),
    Field("sponsor.responsibleParty", "P.sponsorCollaboratorsModule.responsibleParty"),
    Field("results.hasResults", "hasResults"),
    Field("results.participantFlow", "resultsSection.participantFlowModule"),
    Field("results.baselineCharacteristics", "resultsSection.baselineCharacteristicsModule"),
    Field("results.outcomeMeasures", "resultsSection.outcomeMeasuresModule"),
    Field("results.adverseEvents", "resultsSection.adverseEventsModule"),
    Field("results.moreInfo", "resultsSection.moreInfoModule"),
    Field("identification.briefTitle", "P.identificationModule.briefTitle"),
    Field("identification.officialTitle", "P.identificationModule.officialTitle"),
    Field("identification.acronym", "P.identificationModule.acronym"),
    Field("identification.orgStudyId", "P.identificationModule.orgStudyIdInfo"),
    Field("identification.secondaryIds", "P.identificationModule.secondaryIdInfos", "list", "id"),
    Field("identification.organization", "P.identificationModule.organization"),
    Field("identification.nctIdAliases", "P.identificationModule.nctIdAliases"),
    Field("description.briefSummary", "P.descriptionModule.briefSummary", "text"),
    Field("description.detailedDescription", "P.descriptionModule.detailedDescription", "text"),
    Field("conditions.conditions", "P.conditionsModule.conditions", "list"),
    Field("conditions.keywords", "P.conditionsModule.keywords", "list"),
    Field("contacts.central", "P.contactsLocationsModule.centralContacts", "list", "name"),
    Field("contacts.officials", "P.contactsLocationsModule.overallOfficials", "list", "name"),
    Field("oversight.hasDmc", "P.oversightModule.oversightHasDmc"),
    Field("oversight.isFdaRegulatedDrug", "P.oversightModule.isFdaRegulatedDrug"),
    Field("oversight.isFdaRegulatedDevice", "P.oversightModule.isFdaRegulatedDevice"),
    Field("oversight.isUnapprovedDevice", "P.oversightModule.isUnapprovedDevice"),
    Field("oversight.isPpsd", "P.oversightModule.isPpsd"),
    Field("oversight.isUsExport", "P.oversightModule.isUsExport"),
    Field("oversight.fdaaa801Violation", "P.oversightModule.fdaaa801Violation"),
    Field("references.references", "P.referencesModule.references", "list", "citation"),
    Field("references.seeAlsoLinks", "P.referencesModule.seeAlsoLinks", "list", "url"),
    Field("references.availIpds", "P.referencesModule.availIpds", "list", "id"),
    Field("ipdSharing.sharing", "P.ipdSharingStatementModule.ipdSharing"),
    Field("ipdSharing.description", "P.ipdSharingStatementModule.description", "text"),
    Field("ipdSharing.infoTypes", "P.ipdSharingStatementModule.infoTypes", "list"),
    Field("ipdSharing.timeFrame", "P.ipdSharingStatementModule.timeFrame"),
    Field("ipdSharing.accessCriteria", "P.ipdSharingStatementModule.accessCriteria", "text"),
    Field("ipdSharing.url", "P.ipdSharingStatementModule.url"),
    Field(
        "documents.largeDocs", "documentSection.largeDocumentModule.largeDocs", "list", "filename",
    ),
    Field("documents.noSap", "documentSection.largeDocumentModule.noSap"),
    Field("annotations.unposted", "annotationSection.annotationModule.unpostedAnnotation"),
    Field("annotations.violations", "annotationSection.annotationModule.violationAnnotation"),
)

# Sites are keyed one by one (rule 5), so they are not a row of FIELDS.
LOCATIONS_SOURCE: Final = "P.contactsLocationsModule.locations"
LOCATION_PREFIX: Final = "locations."
LOCATION_DROPPED_KEY: Final = "geoPoint"

# Derived or bookkeeping data that changes without the sponsor changing the study.
IGNORED_SOURCES: Final[tuple[str, ...]] = (
    "derivedSection",
    "P.identificationModule.nctId",
    "P.statusModule.lastUpdateSubmitDate",
    "P.statusModule.studyFirstSubmitDate",
    "P.statusModule.studyFirstSubmitQcDate",
    "P.statusModule.resultsFirstSubmitDate",
    "P.statusModule.resultsFirstSubmitQcDate",
    "P.statusModule.dispFirstSubmitDate",
    "P.statusModule.dispFirstSubmitQcDate",
)


# The spec's ignore list: those sources, and each site's geoPoint. A database may track any of
# them again (`trialdiff ignored --track-again`), chosen before it holds its first snapshot.
SITE_GEO_POINT: Final = "P.contactsLocationsModule.locations[].geoPoint"
IGNORE_LIST: Final[tuple[str, ...]] = (*IGNORED_SOURCES, SITE_GEO_POINT)


def expand_source(source: str) -> tuple[str, ...]:
    """Return a registry source as the tuple of record keys it names."""
    if source.startswith("P."):
        source = "protocolSection." + source[2:]
    return tuple(source.split("."))


FIELD_BY_PATH: Final[dict[str, Field]] = {field.path: field for field in FIELDS}
FIELD_RANK: Final[dict[str, int]] = {field.path: rank for rank, field in enumerate(FIELDS)}


def field_kind(path: str) -> FieldKind:
    """Return how a path's values are shown; sites and fallback paths are plain values."""
    field = FIELD_BY_PATH.get(path)
    return field.kind if field else "value"


def order_key(path: str) -> tuple[int, int, str]:
    """Sort key for rule 7: table order, then fallback paths, then sites, each A to Z."""
    if path in FIELD_RANK:
        return (0, FIELD_RANK[path], "")
    if path.startswith(LOCATION_PREFIX):
        return (2, 0, path)
    return (1, 0, path)


def is_under(path: str, prefix: str) -> bool:
    """Tell whether a path is a prefix's own or below it (`status` holds status.*, not statusX).

    What `changes --path` and a watch's `--path` select; query.query_changes asks SQLite the
    same as a range on the path, case as written.
    """
    return path == prefix or path.startswith(prefix.rstrip(".") + ".")
