"""Deserialize SOAP responses written by hie-xds with zeep, bound to the IHE WSDL offline.

Usage: zeep_parse.py WSDL (OPERATION FILE)...
For each FILE (a whole SOAP 1.2 envelope), finds OPERATION in the WSDL's SOAP 1.2 binding, lets
zeep deserialize the envelope as that operation's output message, and prints one JSON line with
what zeep read. Exit status 1 if zeep refuses a file.

zeep 4.3.3 does not implement XSD substitution groups (python-zeep issue #321, PR #433 unmerged),
and rim:RegistryObjectList holds `rim:Identifiable` substitutes (ExtrinsicObject,
RegistryPackage, ...), so zeep refuses every LeafClass response, the NIST fixtures' included.
The children of RegistryObjectList are therefore taken out before the envelope is deserialized,
and each is parsed by zeep against its own global element declaration.

zeep 4.3.3 also builds ClassificationType and ExternalIdentifierType without the content of
their base IdentifiableType (rim.xsd derives them from RegistryObjectType, which refers back to
Classification): it refuses a rim:Slot inside any Classification, which every coded XDS
attribute has (NIST's own fixtures fail the same way). Those Slots are taken out too and parsed
by zeep against the global rim:Slot declaration.
"""
import json
import sys

from lxml import etree
from zeep import Client


RIM = "{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}"


def values(slot):
    if slot.ValueList is None:
        return []
    return [item["Value"] for item in (slot.ValueList._value_1 or [])]


def parse(client, element):
    return client.wsdl.types.get_element(element.tag).parse(element, client.wsdl.types)


def summarize_objects(client, members):
    out = []
    for member in members:
        classification_slots = []
        for classification in member.iter(RIM + "Classification"):
            slots = [child for child in classification if child.tag == RIM + "Slot"]
            for slot in slots:
                classification.remove(slot)
            classification_slots.append({parse(client, slot).name: values(parse(client, slot)) for slot in slots})
        obj = parse(client, member)
        entry = {"element": etree.QName(member).localname, "id": obj.id}
        slots = getattr(obj, "Slot", None) or []
        entry["slots"] = {slot.name: values(slot) for slot in slots}
        entry["classifications"] = [
            {
                "node": c.nodeRepresentation if c.nodeRepresentation is not None else c.classificationNode,
                "scheme": c.classificationScheme,
                "slots": slots_of_c,
            }
            for c, slots_of_c in zip(getattr(obj, "Classification", None) or [], classification_slots)
        ]
        entry["external_identifiers"] = [e.value for e in (getattr(obj, "ExternalIdentifier", None) or [])]
        for attribute in ("mimeType", "objectType", "status", "associationType"):
            value = getattr(obj, attribute, None)
            if value is not None:
                entry[attribute] = value
        out.append(entry)
    return out


def main():
    client = Client(sys.argv[1])
    binding = next(b for b in client.wsdl.bindings.values() if "Soap12" in str(b.name))
    args = sys.argv[2:]
    for operation_name, path in zip(args[0::2], args[1::2]):
        operation = binding._operations[operation_name]
        with open(path, "rb") as handle:
            envelope = etree.fromstring(handle.read())
        members = []
        for object_list in envelope.iter("{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}RegistryObjectList"):
            members.extend(object_list)
            for member in list(object_list):
                object_list.remove(member)
        result = operation.output.deserialize(envelope)
        summary = {"file": path, "operation": operation_name, "status": result.status}
        errors = getattr(result, "RegistryErrorList", None)
        summary["errors"] = [
            {"errorCode": e.errorCode, "severity": e.severity, "codeContext": e.codeContext, "location": e.location}
            for e in (errors.RegistryError if errors is not None else [])
        ]
        if hasattr(result, "RegistryObjectList"):
            summary["objects"] = summarize_objects(client, members)
        print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
