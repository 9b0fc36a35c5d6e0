"""Typed request and response bodies of the scoring endpoint (they make the OpenAPI docs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Id = StrictInt | StrictStr
Filters = dict[str, list[Id]]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not ignored


GRADE = ("rank by this level of graded feedback (a level name such as \"purchase\", or its "
         "1-based number) instead of the model's default, for models trained on levels (gnolr)")


class _Ranking(_Request):
    k: StrictInt = Field(10, ge=1, description="number of items to return (at most the server's "
                         "max_k)")
    exclude_seen: StrictBool = Field(True, description="leave out the items the user already has")
    item_ids: list[Id] | None = Field(None, description="rank only these candidate items")
    exclude_item_ids: list[Id] = Field([], description="never return these items")
    filters: Filters | None = Field(None, description="item attribute -> allowed values; "
                                    "several attributes must all match")
    grade: Id | None = Field(None, description=GRADE)


History = list[Id] | None
HISTORY = ("ids of items the user interacted with; a user the model does not know is answered "
           "from them (folded in) when the model can, instead of from popularity")


Scalar = StrictStr | StrictInt | StrictFloat
Features = dict[str, Scalar | list[Scalar] | None] | None
FEATURES = ("user feature name -> value (text or integer for a categorical feature, a text with "
            "the column's separator or a list for a multi-valued one, a number, a list of numbers "
            "for a dense one); a user the model does not know is answered from them when the "
            "model encodes new users from features. Names must be the model's user features; a "
            "value outside a vocabulary reads as unknown and is reported")


class RecommendRequest(_Ranking):
    user_id: Id
    history: History = Field(None, description=HISTORY)
    features: Features = Field(None, description=FEATURES)


class BatchRecommendRequest(_Ranking):
    user_ids: list[Id] = Field(min_length=1)
    history: dict[str, list[Id]] | None = Field(None, description="user id (as text) -> " + HISTORY)
    features: dict[str, Features] | None = Field(None, description="user id (as text) -> " + FEATURES)


class ScoreRequest(_Request):
    user_id: Id
    item_ids: list[Id] = Field(description="items to score, answered in this order (repeats too)")
    history: History = Field(None, description=HISTORY)
    features: Features = Field(None, description=FEATURES)
    grade: Id | None = Field(None, description=GRADE)


class ReloadRequest(_Request):
    model: str | None = Field(None, description="model to load instead (default: the configured "
                              "one, so models:/NAME@ALIAS picks up a moved alias)")


class ScoredItem(BaseModel):
    item_id: Id
    score: float
    rank: int


class Recommendation(BaseModel):
    user_id: Id
    fallback: bool = Field(description="true: the user is unknown to the model and got the most "
                           "popular items")
    folded_in: bool = Field(description="true: the user is unknown to the model and was answered "
                            "from the history or features sent with the request")
    items: list[ScoredItem]
    unknown_item_ids: list[Id] = Field(description="requested item ids the model does not know")
    unknown_feature_values: dict[str, list[str]] = Field(
        {}, description="feature -> sent values outside its vocabulary (read as unknown)")


class RecommendResponse(Recommendation):
    model_version: str


class BatchRecommendResponse(BaseModel):
    model_version: str
    results: list[Recommendation]


class ItemScore(BaseModel):
    item_id: Id
    score: float


class ScoreResponse(BaseModel):
    user_id: Id
    fallback: bool
    folded_in: bool
    scores: list[ItemScore]
    unknown_item_ids: list[Id]
    unknown_feature_values: dict[str, list[str]] = {}
    model_version: str


class SimilarResponse(BaseModel):
    item_id: Id
    items: list[ScoredItem]
    model_version: str


class ModelStatus(BaseModel):
    status: str
    model: str | None = None
    version: str | None = None
    source: str | None = None
    n_users: int | None = None
    n_items: int | None = None
    factor_bytes: int | None = None  # held by the factor tables (CSR ones: values and indices)
    error: str | None = None
