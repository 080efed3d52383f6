"""Peewee models. Only the store module uses them; the rest of the daemon sees dataclasses."""

from __future__ import annotations

from peewee import (
    BooleanField,
    CharField,
    CompositeKey,
    DatabaseProxy,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

database = DatabaseProxy()


class BaseModel(Model):
    class Meta:
        database = database


class FunctionRow(BaseModel):
    name = CharField(primary_key=True, max_length=63)
    active_version = IntegerField(null=True)
    created_at = DateTimeField()

    class Meta:
        table_name = "functions"


class VersionRow(BaseModel):
    function = ForeignKeyField(FunctionRow, backref="versions", on_delete="CASCADE",
                               column_name="function")
    number = IntegerField()
    image = CharField()
    image_id = CharField()
    config = TextField()  # JSON of FunctionConfig.to_dict()
    code_sha256 = CharField(max_length=64)
    code_size = IntegerField()
    created_at = DateTimeField()
    deployed_by = CharField(default="local")
    pruned = BooleanField(default=False)
    source_version = IntegerField(null=True)
    artifact_sha256 = CharField(default="")  # cluster mode: the artifact's blob
    context_sha256 = CharField(default="")  # cluster mode: a Dockerfile function's context

    class Meta:
        table_name = "versions"
        primary_key = CompositeKey("function", "number")


class ActivationRow(BaseModel):
    function = ForeignKeyField(FunctionRow, on_delete="CASCADE", column_name="function")
    version = IntegerField()
    activated_at = DateTimeField()
    reason = CharField()

    class Meta:
        table_name = "activations"
