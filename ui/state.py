"""Every ``st.session_state`` key the app uses, named in one place.

Keys of widgets whose value a page also reads elsewhere have a fixed name: without a fixed key a
widget's identity changes with its default, so every second change a user made was lost.
Scan-specific widgets append the scan's digest (:func:`scan_key`): a new scan starts from its own defaults.
"""

from __future__ import annotations


class Keys:
    SOURCE = "source"  # label of the chosen sample, or UPLOAD
    UPLOAD = "upload"  # dict(name=..., data=...) of the last upload, in memory only
    UPLOADER = "uploader_widget"
    MODEL = "model_folder"  # {scan digest: folder of the model in use} (the suggested one until changed)
    MODEL_WIDGET = "model_widget"
    ROUTES = "routes"  # {(scan digest, model folders): core.routing.Route}, this session only
    FRAME = "frame"
    PRESET = "window_preset"
    WINDOW = "window"  # (centre, width) chosen for display
    WINDOW_FOR = "window_for"  # digest of the scan the display window was chosen for
    INVERT = "invert_display"
    REVEAL = "reveal_identifiers"
    SCANS = "loaded_scans"  # digest -> Scan, this session only
    SERIES = "series_index"  # which series of a multi-series upload is shown
    SERIES_FOUND = "series_found"  # {"for": digest, "labels", "notes", ...} of the series of the upload
    SERIES_WIDGET = "series_widget"
    PACS = "pacs"  # {"url", "user", "password"}: a PACS the person connected to, this session only
    PACS_RESULTS = "pacs_results"  # the last search's rows, this session only
    PACS_INSTANCE = "pacs_instance_widget"  # prefix, + series UID: the image of that series to open
    SALT = "deidentification_salt"  # a random secret per session: de-identified UIDs stay stable within it
    WITH_IDENTIFIERS = "dicom_with_identifiers"
    DICOM_RESULTS = "dicom_results"  # {"for": digest of scan and settings, "zip", "error"}: the last built, this session
    SHRUNK = "shrunk_frames"  # (digest, frame, side) -> the frame shrunk for display, this session only
    METHOD = "method"
    TARGET = "target_class"
    LAYER = "layer"
    OPACITY = "opacity"
    COLORMAP = "colormap"
    TRUST = "trust_scores"  # (what, inputs' digest) -> faithfulness / uncertainty result, this session only
    SANITY = "sanity_checks"  # (map digest) -> sanity check result, this session only
    SCORED = "scored_maps"  # (map digest) -> faithfulness and uncertainty asked for, this session only
    SCORE_BUTTON = "score_button"
    SHOW_ANYWAY = "show_anyway"  # {(scan digest, model folder)}: out-of-range predictions the person asked to see
    VIEW = "explain_view"  # "One method" or "All methods side by side"
    OUTLINE = "show_outline"
    MASK_UPLOADER = "mask_uploader_widget"
    MASK = "uploaded_mask"  # {"for": scan digest, "name", "data"}: an outline the person uploaded, in memory only
    EXPLAIN_FRAME_WIDGET = "explain_frame_widget"
    FRAME_WIDGET = "frame_widget"
    PRESET_WIDGET = "window_preset_widget"
    CENTRE_WIDGET = "window_centre_widget"
    WIDTH_WIDGET = "window_width_widget"
    INVERT_WIDGET = "invert_widget"
    METHOD_WIDGET = "method_widget"
    TARGET_WIDGET = "target_widget"
    LAYER_WIDGET = "layer_widget"
    SCORE_WIDGET = "map_score_widget"
    OPACITY_WIDGET = "opacity_widget"
    COLORMAP_WIDGET = "colormap_widget"
    SANITY_BUTTON = "sanity_button"
    # Teaching pages (pages/lesson.py, pages/quiz.py, pages/classroom.py): this session's memory only.
    LESSON_KIND = "lesson_kind"  # which lesson: one case step by step, or the shortcut lesson
    LESSON_CASE = "lesson_case"  # slot id of the lesson case in view
    LESSON_STEP = "lesson_step"  # {lesson: step index}
    LESSON_OUTLINE = "lesson_outline_widget"
    LESSON_HANDOUT = "lesson_handout"  # {lesson case: PDF bytes} prepared in this session
    LESSON_SANITY = "lesson_sanity"  # lesson cases whose sanity check this session asked for
    QUIZ_MODE = "quiz_mode"  # on my own, or in a class
    QUIZ_COUNT = "quiz_count_widget"
    QUIZ_SEED = "quiz_seed_widget"
    QUIZ_SET = "quiz_set"  # case ids of the quiz in progress, in order
    QUIZ_INDEX = "quiz_index"  # position of the case in view
    QUIZ_ANSWERS = "quiz_answers"  # {case id: core.quiz.score_answer result}, this session only
    QUIZ_CLICK = "quiz_click"  # prefix of the image component's key, per quiz and case
    QUIZ_DIAGNOSIS = "quiz_diagnosis"  # prefix of the diagnosis widget's key, per quiz and case
    QUIZ_RUN = "quiz_run"  # a counter naming the quiz in progress, so a new quiz starts with empty widgets
    CLASS_JOINED = "class_joined"  # {code, token, nickname} of the class this student joined
    CLASS_CODE_WIDGET = "class_code_widget"
    NICKNAME_WIDGET = "nickname_widget"
    TEACHER = "teacher_class"  # {code, key} of the class this session opened (the key ends or deletes it)
    TEACHER_VIEW = "teacher_view"  # (class version, what the live view draws) until the class changes
    TEACHER_TITLE = "teacher_title_widget"
    TEACHER_COUNT = "teacher_count_widget"
    TEACHER_SEED = "teacher_seed_widget"
    TEACHER_DAYS = "teacher_days_widget"
    RESUME_CODE = "resume_code_widget"
    RESUME_KEY = "resume_key_widget"
    DELETE_CONFIRM = "delete_confirm_widget"
    CLASS_MESSAGE = "class_message"  # (kind, sentence) shown once after ending or deleting a class
    # Teaching pages' widgets. A "prefix" key is completed as f"{prefix}_{...}" (see the comment for what follows).
    LESSON_SCAN_CHART = "lesson_scan"
    LESSON_PROBABILITIES = "lesson_probabilities"
    LESSON_CURVES = "lesson_curves"
    LESSON_SANITY_BUTTON = "lesson_sanity"  # prefix, + sample file name
    HANDOUT_BUTTON = "handout_button"  # prefix, + lesson case slot
    HANDOUT_DOWNLOAD = "handout_download"  # prefix, + lesson case slot
    SHORTCUT_CURVES = "shortcut_curves"  # prefix, + model label
    STEP_BACK = "back"  # prefix, + where (top, bottom) and lesson
    STEP_NEXT = "next"  # prefix, + where (top, bottom) and lesson
    QUIZ_SUBMIT = "submit"  # prefix, + quiz context and case id
    QUIZ_PROBABILITIES = "quiz_probabilities"  # prefix, + case id
    QUIZ_NEXT = "next"  # prefix, + quiz context and case id
    # Models page (pages/models.py).
    MODELS_OWNER = "models_owner"  # this session's token on the shared training queue
    MODELS_IMPORTED = "models_imported"  # the last import's one-line summary, shown after the rerun
    MODELS_ENDED = "models_ended"  # ids of this session's jobs seen ended, so the page redraws once when one ends
    IMPORT_UPLOADER = "models_model_uploader"
    IMPORT_TITLE = "models_import_title"
    IMPORT_CLASSES = "models_import_classes"
    IMPORT_SIZE = "models_import_size"
    IMPORT_CHANNELS = "models_import_channels"
    IMPORT_RANGE = "models_import_range"
    IMPORT_CLAHE = "models_import_clahe"
    IMPORT_BUTTON = "models_import_button"
    TRAIN_SOURCE = "models_train_source"
    TRAIN_FOLDER = "models_train_folder"
    TRAIN_ZIP_UPLOADER = "models_zip_uploader"
    TRAIN_NAME = "models_train_name"
    TRAIN_EPOCHS = "models_train_epochs"
    TRAIN_SIZE = "models_train_size"
    TRAIN_BUTTON = "models_train_button"
    TRAIN_CANCEL = "models_cancel"  # prefix, + job id
    TRAIN_FORGET = "models_forget"  # prefix, + job id


UPLOAD = "Your upload"


def scan_key(key: str, digest: str, *extra) -> str:
    """A widget key tied to one scan (and optionally more context), e.g. ``frame_widget_3fa2…``."""
    return "_".join([key, str(digest), *map(str, extra)])
