"""Teachers: the zoo's cards, example ID / OOD / triggered inputs, training of missing teachers
(in a background process, with progress)."""

import tempfile
from pathlib import Path

import streamlit as st

from dfkd_viz import viz
from dfkd_viz.data import DATASETS, domain_names
from dfkd_viz.data.user import MAX_SOURCE_BYTES, delete_dataset, import_dataset, list_datasets
from dfkd_viz.errors import DfkdVizError
from dfkd_viz.models import list_models
from dfkd_viz.teachers.importer import MAX_TEACHER_BYTES, delete_teacher, import_teacher
from dfkd_viz.teachers.maps import start_map, start_maps_quietly
from dfkd_viz.teachers.training import start_training, training_progress
from pages import _ui as ui

ui.page_setup()
st.title("Teacher zoo")
st.markdown(
    "Each zoo teacher is trained by a recipe: **clean**, **NTL** (non-transferable: accurate "
    "in-distribution, wrong on its OOD domain), **CUTI** (an NTL variant) or **backdoor** (a trigger sends any "
    "input to class 0); **user** teachers are files you imported (below). Accuracies are measured on "
    "held-out test data."
)


@st.cache_data(show_spinner=False)
def examples(
    dataset: str, ood_domain: str | None, trigger: str | None, n: int = 6
) -> dict[str, list[bytes]]:
    from dfkd_viz.data import load_dataset, load_domain, make_trigger
    from dfkd_viz.util.io import png_bytes

    test = load_dataset(dataset, "test")
    out = {"ID": [png_bytes(viz.to_uint8(x.numpy())) for x in test.x[:n]]}
    if ood_domain:
        try:
            ood = load_domain(ood_domain, dataset, "test")
            out[f"OOD ({ood_domain})"] = [png_bytes(viz.to_uint8(x.numpy())) for x in ood.x[:n]]
        except DfkdVizError:
            pass
    if trigger:
        trig = make_trigger(trigger, test.shape).apply(test.x[:n]).numpy()
        out[f"triggered ({trigger})"] = [png_bytes(viz.to_uint8(x)) for x in trig]
    return out


cards = ui.cached_cards()
missing = [c["id"] for c in cards if not c["trained"] and c["available"]]
running = {c["id"]: p for c in cards if (p := training_progress(c["id"])) and p.active}

top = st.columns([2, 5])
if top[0].button(
    f"Train {len(missing)} missing teacher(s)",
    disabled=not missing or bool(running),
    icon=":material/model_training:",
    key="train_all",
):
    start_training(missing)
    st.rerun()
if not missing:
    top[1].caption("Every teacher whose data is on this machine is trained and cached.")


@st.fragment(run_every=1.0 if running else None)
def progress_panel() -> None:
    live = {c["id"]: training_progress(c["id"]) for c in cards}
    active = {k: v for k, v in live.items() if v and v.active}
    for tid, p in active.items():
        st.progress(p.frac, text=f"{tid}: {p.state} · {p.msg}")
    failed = {k: v for k, v in live.items() if v and v.state == "failed"}
    for tid, p in failed.items():
        st.warning(f"Training {tid} failed: {p.error}")
    if running and not active:
        ui.cached_cards.clear()
        st.rerun()


progress_panel()

maps_busy = any(ui.map_status(c["id"])[1] for c in cards if c["trained"])


@st.fragment(run_every=2.0 if maps_busy else None)
def maps_panel() -> None:
    for c in cards:
        if c["trained"]:
            line, busy = ui.map_status(c["id"])
            if busy:
                st.caption(f"`{c['id']}` · {line}")


maps_panel()

DETECT = "from the file"
# uploads: the server's limit (.streamlit/config.toml, server.maxUploadSize) and ours, whichever is less
UPLOAD_MB = min(int(st.get_option("server.maxUploadSize")), MAX_TEACHER_BYTES // 2**20)


def _validated_upload(upload, what: str, max_bytes: int, do_import):
    """Run ``do_import(path)`` on an upload, or show why not; returns its result or None.

    The upload is written to a fresh private temporary folder under a fixed name: the browser's
    file name is never used as a path (it only becomes the default id, sanitised)."""
    if upload is None:
        st.error(f"Choose {what} first.")
        return None
    if upload.size > max_bytes:
        st.error(f"{upload.name} is larger than {max_bytes // 2**20} MiB.")
        return None
    with tempfile.TemporaryDirectory() as tmp, st.spinner("Validating…"):
        path = Path(tmp) / "upload.bin"
        path.write_bytes(upload.getvalue())
        try:
            return do_import(path)
        except DfkdVizError as exc:
            st.error(f"Rejected: {exc}")
            return None


with st.expander("Import your own teacher", icon=":material/upload_file:"):
    st.caption(
        "A `.safetensors` file, a state_dict saved with `torch.save`, or a training checkpoint "
        "(CMI / Fast-Datafree `train_scratch.py`, ABD's `{'model': …}`; DataParallel's `module.` "
        "prefix is removed), read with `weights_only=True`: never unpickled. Every tensor is "
        "checked against the architecture (the checkpoint's own, or the one its tensors fit), "
        "NaN / Inf are refused, its accuracy is measured on the dataset's test split next to the "
        f"one the file reports. At most {UPLOAD_MB} MiB here; larger files with "
        "`dfkd-viz teachers import`."
    )
    datasets = sorted(
        {c["dataset"] for c in cards} | set(DATASETS.names()) | {m["name"] for m in list_datasets()}
    )
    with st.form("import_teacher", clear_on_submit=False):
        upload = st.file_uploader(
            "Teacher weights",
            type=["safetensors", "pt", "pth", "tar", "ckpt", "bin"],
            key="teacher_upload",
        )
        f1, f2, f3 = st.columns(3)
        archs = [DETECT, *list_models()]
        arch = f1.selectbox(
            "Architecture",
            archs,
            help="'from the file': the checkpoint's own `arch` entry (CMI), else the one "
            "registered architecture whose tensor names and shapes the weights have",
        )
        dataset = f2.selectbox(
            "Dataset it classifies",
            datasets,
            index=datasets.index("mnist") if "mnist" in datasets else 0,
        )
        new_id = f3.text_input("Teacher id", placeholder="from the file name")
        g1, g2 = st.columns(2)
        norm = g1.text_input(
            "Input normalisation",
            "dataset",
            help="'dataset' (its mean/std), 'none' (pixels in [0, 1]) or 'MEAN/STD' per channel, "
            "e.g. 0.1307/0.3081",
        )
        domains = domain_names()
        ood = g2.selectbox("OOD domain for its card", domains, index=domains.index("mnist-m"))
        submitted = st.form_submit_button("Validate and import", icon=":material/verified_user:")
    c = submitted and _validated_upload(
        upload,
        "a teacher file",
        UPLOAD_MB * 2**20,
        lambda path: import_teacher(
            path,
            arch=None if arch == DETECT else arch,
            dataset=dataset,
            teacher_id=new_id.strip() or None,
            normalization=norm,
            ood_domain=ood,
            filename=upload.name,
        ),
    )
    if c:
        ui.cached_cards.clear()
        start_maps_quietly([c["id"]])  # its reference map, in a low-priority background job
        reported = (
            f" (the file reports {ui.pct(c['reported_acc'])})"
            if c.get("reported_acc") is not None
            else ""
        )
        st.session_state["imported"] = [
            f"Imported `{c['id']}` ({c['arch']}, from a {c.get('source_format')}): ID accuracy "
            f"{ui.pct(c['id_acc'])} on {dataset}{reported}, OOD accuracy {ui.pct(c['ood_acc'])} "
            f"on {ood}; its card is below.",
            *(c.get("warnings") or []),
        ]
        st.rerun()  # the new card joins the list
    done = st.session_state.pop("imported", None)
    if done:
        st.success(done[0])
        for w in done[1:]:
            st.warning(w)

with st.expander("Import your own data", icon=":material/photo_library:"):
    st.caption(
        "An `.npz` with `x` (N×H×W, N×H×W×C or N×C×H×W; uint8 or floats in [0, 1]) and `y` "
        "(labels 0…K−1), or a `.zip` of a folder with one sub-folder of images per class. It "
        "becomes a dataset you can import teachers on, and an OOD or student domain of any run. "
        f"At most {UPLOAD_MB} MiB here; larger sets with `dfkd-viz data import`."
    )
    with st.form("import_data"):
        dupload = st.file_uploader("Images", type=["npz", "zip"], key="data_upload")
        h1, h2, h3 = st.columns(3)
        dname = h1.text_input("Dataset name", placeholder="e.g. my-digits")
        dsize = h2.number_input(
            "Resize to (pixels, 0 = keep)", min_value=0, max_value=128, value=0, step=4
        )
        frac = h3.number_input("Test share", min_value=0.05, max_value=0.9, value=0.2, step=0.05)
        dsub = st.form_submit_button("Validate and import", icon=":material/verified:")
    meta = dsub and _validated_upload(
        dupload,
        "an .npz or .zip file",
        MAX_SOURCE_BYTES,
        lambda path: import_dataset(
            path,
            dname.strip(),
            size=(int(dsize), int(dsize)) if dsize else None,
            test_fraction=float(frac),
            filename=dupload.name,
        ),
    )
    if meta:
        ui.cached_cards.clear()
        c_, h_, w_ = meta["shape"]
        st.success(
            f"Imported `{meta['name']}`: {meta['n']} images, {c_}×{h_}×{w_}, "
            f"{len(meta['classes'])} classes."
        )
    for m in list_datasets():
        r = st.columns([4, 1])
        c_, h_, w_ = m["shape"]
        r[0].markdown(
            f"`{m['name']}` · {m['n']} images · {c_}×{h_}×{w_} · {len(m['classes'])} classes · "
            f"from {m['source']['filename']}"
        )
        if r[1].button("Delete", key=f"del_data_{m['name']}", icon=":material/delete:"):
            delete_dataset(m["name"])
            st.rerun()

for row in range(0, len(cards), 2):
    cols = st.columns(2)
    for col, c in zip(cols, cards[row : row + 2]):
        with col.container(border=True):
            st.markdown(f"#### `{c['id']}` {ui.kind_badge(c['kind'])}", unsafe_allow_html=True)
            st.caption(c.get("description") or "")
            m = st.columns(3)
            m[0].metric("ID accuracy", ui.pct(c.get("id_acc")))
            m[1].metric(f"OOD acc ({c.get('ood_domain') or '—'})", ui.pct(c.get("ood_acc")))
            m[2].metric(
                f"ASR ({c.get('trigger')})" if c.get("trigger") else "ASR", ui.pct(c.get("asr"))
            )
            if not c["available"]:
                st.caption(
                    f"Dataset {c['dataset']} is not on this machine (docs/own-teachers-and-data.md says how to add it)."
                )
                continue
            if not c["trained"]:
                if st.button("Train", key=f"train_{c['id']}", disabled=bool(running)):
                    start_training([c["id"]])
                    st.rerun()
            elif c["kind"] == "user":
                src = c.get("source") or {}
                how = c.get("source_format") or src.get("format")
                if src.get("dataparallel"):
                    how += ", DataParallel"
                if c.get("reported_acc") is not None:
                    how += f", reports {ui.pct(c['reported_acc'])}"
                st.caption(
                    f"{c['dataset']} · {c['arch']} · imported from {src.get('filename')} "
                    f"({how}, sha256 {str(src.get('sha256'))[:12]}…)"
                )
                for w in c.get("warnings") or []:
                    st.warning(w)
                if st.button("Delete", key=f"del_{c['id']}", icon=":material/delete:"):
                    delete_teacher(c["id"])
                    ui.cached_cards.clear()
                    st.rerun()
            else:
                st.caption(
                    f"{c['dataset']} · {c['arch']} · seed {c.get('seed')} · trained in {c.get('train_s')} s"
                )
            if c["trained"]:
                line, busy = ui.map_status(c["id"])
                if line:
                    st.caption(line)
                if (
                    not busy
                    and line != "reference map: ready"
                    and st.button("Compute its reference map", key=f"map_{c['id']}")
                ):
                    try:
                        start_map(c["id"])
                    except (DfkdVizError, OSError) as exc:
                        st.error(f"Could not start the map job: {exc}")
                    else:
                        st.rerun()
            for label, imgs in examples(
                c["dataset"], c.get("ood_domain"), c.get("trigger")
            ).items():
                st.markdown(f"<span class='dv-muted'>{label}</span>", unsafe_allow_html=True)
                st.html(viz.sample_grid_html(imgs, img_px=48))
