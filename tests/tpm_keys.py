"""Real TPM 2.0 public keys for tests, read once from swtpm 0.7.1 with tpm2-tools 5.4.

`EK_*` are RSA-2048 endorsement keys (`tpm2_createek -G rsa`, 316-byte TPM2B_PUBLIC), `SRK_*`
storage root keys from the SDK's template (protocol.md §6.1, 284 bytes). A and B come from two
different TPMs. Base64, as the service API and device bodies carry them. Only public keys: the
private parts never left the software TPM, so tests that need to answer a challenge use
tests/unit/attestation/soft_tpm.py or a real swtpm instead.
"""

EK_A = (
    "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAw2vsrlj5jfQgF85+"
    "0k2LCwGyUX7tOtp8PmKogoRzOiVplUV4pTUo3YItZSzRQDAS7VE9ih7KHV7HV2nNMfxwMvV1TrFxQQsLjK0lb0yMd8D+U2bV"
    "wPuil7LBJX6NFziXfwRCW8H0eTdAjuBL1quiSb5UOvo0bh9yxt7eLgcIM8XRkQWPDwf/mu6QUW0ihXiueU2mkx4mltT+C/eC"
    "YRLzsqOIb41WLWL3BZKBOlx+pbMh3rnyMepExoHKudWELzwz1DqDuQ4GzmnTFEXccAEWMCDncIQLkJITLmq5mo8LcGH2vINL"
    "Ns3bvzLgjrpq+jQTtcKuARxK/r3FK1LsQoNrnQ=="
)
SRK_A = (
    "ARoAAQALAAMEcgAAAAYAgABDABAIAAAAAAABAKV+/aI0Q6a2czAcfPHJ9nSIDKvX8IU0DVV7mqZ+svTYNo/lldRk+EYItN7I"
    "oyEGRo6yTbWivGArkxgNS3J+0BkOLs/sGfNXsON+jLqFMJPCti7MnHXjI7EVTgpfktEj0U4nFinSSqCA2aVh8AMlKcFv4NRJ"
    "pR9J3w1NA7Vo0gjtnXkrYh7DdQFQQcyT2MfqrdudtPoO667/h48EkMiczUwwG730CY7aQB3VmIZcnkrxEXiN6mHdh2L4EtB5"
    "mPLwGDF0HqDlw5MMOl05soJRrhBIQuzGR8ra77ZvK95IazgzCeGQKzk2/WMDS4D2wuYWyRvl6ztPBzQrl/D8xKSVkus="
)
# The Node SDK's default registration ID for EK_A (base32 of SHA-256 of the TPM2B_PUBLIC).
EK_A_REGISTRATION_ID = "d5e2cnzazpjydmhawjopmumsloid42cfl4sdebkifmdzixfzsxja"

EK_B = (
    "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAzPoDQtFZgtSomuh7"
    "6qecp4474ig0Iua2XpeDHY2G9+ZigmmPahpxq6Cpa7Mb+AAQLPqlsvda6f8h0NeKTrM3/7d9uBsH2kxwvnAl3JgsWnONEN6F"
    "hJE+Q74Hqe7K4oefgvFEtfhQGpq9ba5A9ZOLa6Ei7zzVXsypt7fFA7EYGHorWqiIa6biyQa3t9PKRl/Bj5Zp4noT/4sQxXC7"
    "7VdjaZTg08POwM8wQjyYuoCTlu0tC5yUXEhchuKv96H3VYE16PutkGq9RUiI1IFCx41CNzkYBQipeap6v/oKRz1e+N4zh/pG"
    "GfE4N6BjhKFZDI2Jnaewv/oMP7bmv2V8gcM1BQ=="
)
SRK_B = (
    "ARoAAQALAAMEcgAAAAYAgABDABAIAAAAAAABAOTngb3pEzx89s/NKRsdbe7R6l63vk/n+SHlmrVF6pp3Ju06oFzAU7FDzrhc"
    "DjOvbpHoZOOSb5xIyD83YoJCkR2WUvD+dTyCO8Sn/bI7ygcWv4dIOBBTkh7ZHr2tZ8p5lG6dAD8RmViQtxh/EPCr9lzsAm21"
    "cJR8hnx/YW7VT+RkUwlLHgdj66Nw7wdbveHwKrgAFLaAZUw9HBnDj+QSJOXXQUAbq9jgzIEeX9dw4K7KY1rJjbsxEjdx35Xi"
    "UaM5oT/+Okz94mx6QyRWIsOJFGQMG8pdGCYcA5YgFQFdOef9oc5rxale2ELu+RRhvPOC4xccJpktEQoHEwvJ4DXJtEs="
)
