"""Write chinese_reviews_synthetic.csv: a small, deterministic Chinese product-review sentiment set.

Why synthetic: the examples and their tests must run offline and the file must be small enough to commit.
Each review is a template filled from word lists; the sentiment lives in the phrases, so a tiny BERT trained
from scratch on characters learns it in a few epochs, while the shared products, openings and endings keep
it from being a lookup table. Same seed, same bytes: tests regenerate the file and compare.

    python make_synthetic.py                 # rewrites chinese_reviews_synthetic.csv beside this file
    python make_synthetic.py --out /tmp/x.csv --per-label 100
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "chinese_reviews_synthetic.csv"
DEFAULT_PER_LABEL = 200
SEED = 20240601

PRODUCTS = [
    "手机", "耳机", "键盘", "鼠标", "显示器", "充电宝", "台灯", "背包", "运动鞋", "外套",
    "咖啡机", "电饭煲", "吹风机", "保温杯", "行李箱", "音箱", "手表", "平板", "床单", "雨伞",
]  # fmt: skip
PHRASES = {
    "positive": [
        "质量很好", "非常满意", "物超所值", "做工精细", "发货很快", "强烈推荐", "超出预期", "手感很棒",
        "性价比很高", "用起来很舒服", "包装精美", "客服很耐心", "颜值很高", "效果非常好", "值得购买",
    ],
    "negative": [
        "质量太差", "非常失望", "用了两天就坏了", "做工粗糙", "客服态度恶劣", "不推荐购买", "完全是假货",
        "味道刺鼻", "跟图片差太多", "退货很麻烦", "根本没法用", "发货慢得要命", "一点都不值", "做工很烂",
        "后悔买了",
    ],
    "neutral": [
        "还行吧", "一般般", "和描述差不多", "中规中矩", "没什么特别的", "价格适中", "普普通通",
        "凑合能用", "没什么可说的", "跟预想的一样", "能用就行", "正常水平", "还需要再观察",
        "看个人需求", "马马虎虎",
    ],
}  # fmt: skip
OPENINGS = ["", "刚收到，", "用了一周，", "第二次买了，", "给家里人买的，", "昨天到货，", "试用了几天，"]
ENDINGS = ["", "。", "！", "，就这样。", "，先评价一下。", "，给大家参考。"]
TEMPLATES = [
    "{opening}这个{product}{phrase}{ending}",
    "{opening}{product}{phrase}{ending}",
    "{opening}买的{product}，{phrase}{ending}",
    "{product}收到了，{phrase}{ending}",
    "{opening}总的来说{product}{phrase}{ending}",
]


def reviews(per_label: int, seed: int) -> list[tuple[str, str]]:
    """`per_label` distinct reviews for each label, shuffled; the same arguments give the same list."""
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    for label, phrases in PHRASES.items():
        seen: set[str] = set()
        while len(seen) < per_label:
            text = rng.choice(TEMPLATES).format(
                opening=rng.choice(OPENINGS),
                product=rng.choice(PRODUCTS),
                phrase=rng.choice(phrases),
                ending=rng.choice(ENDINGS),
            )
            if text not in seen:
                seen.add(text)
                rows.append((text, label))
    rng.shuffle(rows)
    return rows


def write_csv(rows: list[tuple[str, str]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a small deterministic synthetic Chinese sentiment CSV."
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"CSV to write (default: {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--per-label", type=int, default=DEFAULT_PER_LABEL, help="reviews per label (default: %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=SEED, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    # 15 phrases x 20 products x 5 templates x 7 openings x 6 endings: far more than any sane --per-label.
    if not 1 <= args.per_label <= 5000:
        parser.error(
            f"--per-label {args.per_label}: must be 1..5000; fix: e.g. --per-label {DEFAULT_PER_LABEL}"
        )
    rows = reviews(args.per_label, args.seed)
    write_csv(rows, args.out)
    print(f"wrote {len(rows)} reviews ({args.per_label} per label) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
