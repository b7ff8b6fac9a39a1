"""Generate ``order_items.csv``, tinygpt's default training corpus.

The book this project follows trains on ``订单商品名称.csv`` ("order item
names"): one Chinese e-commerce product title per line.  That file is not
redistributable, so this script writes a *synthetic stand-in* with the same
shape: titles such as ``农夫山泉 饮用天然水 550ml*24瓶 整箱`` built from
per-category templates (brand, product, variant, size/spec, pack count and an
optional selling point or shop suffix).  The templates are strict enough for a
tiny GPT to pick up the structure within a few hundred steps, while the random
fills give thousands of distinct titles; about one line in ten repeats an
earlier title, as real order logs do.

Only the standard library is used and all randomness comes from one seeded
``random.Random``, so the output is reproducible byte-for-byte.  Regenerate::

    python data/generate_corpus.py                 # rewrites data/order_items.csv
    python data/generate_corpus.py --out x.csv --seed 7 --chars 100000

Size: the book quotes 324,523 characters / 77,919 cl100k_base tokens for its
file, but Chinese titles run at about one character per token, so no mix of
titles matches both figures.  The default follows the token count, which is
what the model sees: 76,000 characters give 77,964 tokens (1,602 distinct).
``--chars 320000`` gives the book's character count (about 330,000 tokens).

Template syntax: ``{a|b|c}`` picks one option (an empty option means "omit"),
``{36..45}`` picks an integer from the inclusive range.
"""

# ruff: noqa: E501  (the catalog keeps one template per line, which is easier to read than wrapped)

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

DEFAULT_SEED = 20240521
DEFAULT_CHARS = 76_000
DEFAULT_OUT = Path(__file__).resolve().parent / "order_items.csv"

REPEAT_RATE = 0.10  # a line re-orders an earlier title
PREFIX_RATE = 0.05  # a bracketed promotion prefix
FEATURE_RATE = 0.30  # a category selling point
SUFFIX_RATE = 0.20  # a shop-wide suffix

# Decorations, in the same template syntax as the catalog.
PREFIX = (
    "{【京东超市】|【官方正品】|【顺丰包邮】|【买2送1】|【新品上市】|【限时秒杀】|【直播专享】}"
)
SUFFIX = "{京东自营|官方旗舰店|正品保证|包邮|现货速发|顺丰发货|七天无理由|假一赔十}"

# category -> (weight, selling points appended now and then, templates)
CATALOG: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "drinks": (
        12,
        "{整箱|整箱装|家庭装|量贩装|年货|聚餐|露营|新老包装随机发货}",
        (
            "{农夫山泉|怡宝|百岁山|景田|娃哈哈|康师傅|今麦郎|冰露|昆仑山} {饮用天然水|饮用纯净水|天然矿泉水|苏打水} {350ml|380ml|550ml|570ml|1.5L|4L}*{12|15|20|24}瓶",
            "{可口可乐|百事可乐|雪碧|芬达|元气森林|美年达|七喜} {原味|无糖|零度|白桃味|青柠味|葡萄味|橙味|荔枝味|乳酸菌味|卡曼橘味|柚子味} {汽水|碳酸饮料|气泡水} {200ml|330ml|480ml|500ml}*{6|12|24}{罐|瓶}",
            "{康师傅|统一|三得利|东方树叶|小茗同学|维他|王老吉|加多宝} {冰红茶|绿茶|茉莉花茶|乌龙茶|柠檬茶|凉茶|大麦茶} {250ml|310ml|500ml|550ml|1L}*{12|15|24}{瓶|罐|盒}",
            "{伊利|蒙牛|特仑苏|光明|金典|安慕希|纯甄|认养一头牛|君乐宝} {纯牛奶|全脂纯牛奶|低脂高钙牛奶|有机纯牛奶|原味酸奶|黄桃燕麦酸奶} {200ml|250ml|205g|230g}*{10|12|16|24}{盒|包|瓶} {礼盒装|早餐奶|}",
            "{雀巢Nescafe|星巴克Starbucks|三顿半|隅田川|瑞幸luckin|永璞|UCC|麦斯威尔Maxwell} {速溶咖啡|冷萃咖啡粉|挂耳咖啡|美式黑咖啡|拿铁|咖啡豆} {1.8g|2.5g|10g|15g}*{24|30|40|60}{条|袋|颗} {提神|0糖0脂|阿拉比卡|}",
            "{青岛啤酒|雪花|百威Budweiser|哈尔滨|燕京|珠江|科罗娜Corona|喜力Heineken|福佳Hoegaarden} {经典|纯生|勇闯天涯|小麦白啤|黑啤|拉格} 啤酒 {330ml|500ml|275ml}*{6|12|24}{听|罐|瓶}",
            "{贵州茅台 飞天|五粮液 普五|洋河 梦之蓝M6+|泸州老窖 特曲|汾酒 青花20|剑南春|郎酒 红花郎|习酒 窖藏1988} {53度|52度|42度|45度} {500ml|375ml|100ml}*{1|2|6}瓶 {酱香型|浓香型|清香型} 白酒",
            "{汇源|农夫山泉|味全|零度果坊|佳农|天地壹号} {100%橙汁|NFC鲜榨橙汁|苹果汁|椰子水|芒果汁|苹果醋} {300ml|330ml|1L|1.5L}*{4|6|12}瓶",
            "{张裕|长城|奔富Penfolds|拉菲Lafite|黄尾袋鼠Yellow Tail} {干红葡萄酒|赤霞珠干红|梅洛红酒|甜白葡萄酒} {750ml}*{1|2|6}瓶 {礼盒装|原瓶进口|}",
            "{西湖牌 明前龙井|狮峰 龙井|大益 普洱茶 熟茶|竹叶青 峨眉高山绿茶|八马 铁观音|武夷星 大红袍|福鼎 白茶 白牡丹|张一元 茉莉花茶|小罐茶 金罐} {100g|125g|250g|357g|500g} {罐装|礼盒装|饼茶|袋装} {2024新茶|特级|一级}",
        ),
    ),
    "snacks": (
        12,
        "{零食大礼包|办公室零食|休闲零食|网红零食|儿童零食|追剧|独立小包装|解馋}",
        (
            "{三只松鼠|良品铺子|百草味|洽洽|沃隆|来伊份} {每日坚果|夏威夷果|碧根果|开心果|混合坚果|腰果|巴旦木|手剥松子} {500g|750g/30袋|375g/15袋|1kg|210g*2袋} {混合果仁|孕妇零食|奶油味|原味|}",
            "{乐事Lay's|品客Pringles|可比克|上好佳|好丽友|盼盼} 薯片 {原味|黄瓜味|番茄味|烧烤味|青柠味|酸奶油洋葱味|意大利香浓红烩味|藤椒味|海苔味|蜂蜜黄油味|麻辣小龙虾味|芝士味} {40g|70g|104g|135g}*{3|5|10}{袋|罐}",
            "{奥利奥Oreo|好丽友|达利园|嘉顿|康师傅|三牛|友臣|港荣} {夹心饼干|巧克力派|法式软面包|苏打饼干|蛋黄派|肉松饼|蒸蛋糕|威化饼干} {388g|600g|1kg|12枚|20枚|2斤} {早餐|下午茶|整箱|}",
            "{德芙Dove|费列罗Ferrero|士力架Snickers|M&M's|好时Hershey's|瑞士莲Lindt|健达Kinder|歌帝梵GODIVA} {丝滑牛奶巧克力|榛果威化巧克力|花生夹心巧克力|黑巧克力|软心球|缤纷乐} {43g|100g|250g|300g|30粒|16粒}*{1|3|6}{盒|袋|条|排}",
            "{康师傅|统一|白象|今麦郎|日清|农心|汤达人|合味道} {红烧牛肉面|老坛酸菜牛肉面|香辣牛肉面|鲜虾鱼板面|汤好喝骨汤面|辛拉面|豚骨拉面|海鲜风味杯面} {袋装|桶装|杯面} {5|6|12|24}{袋|桶|杯} {方便面|泡面|速食|}",
            "{卫龙|麻辣王子|源氏|劲仔} {大面筋|小面筋|魔芋爽|亲嘴烧|小鱼干|豆干|辣条} {15g|65g|102g|106g|260g}*{5|10|20|30}{包|袋} {香辣味|麻辣味|甜辣味|}",
            "{旺旺 雪饼|旺旺 仙贝|旺旺 大礼包|浪味仙 膨化零食|盼盼 鲜虾片|上好佳 虾条|呀土豆 薯条|咪咪 虾条|旺仔 QQ糖} {70g|84g|150g|400g|520g}*{1|2|4|12}{包|袋|盒}",
            "旺仔牛奶 {原味|复原乳} {125ml|245ml}*{4|12|20|24}{罐|盒} {礼盒装|}",
            "{百草味|良品铺子|三只松鼠|来伊份|好想你} {红枣|芒果干|猪肉脯|牛肉干|无核黄桃干|蜜饯果干} {100g|200g|250g|500g|1kg} {袋装|盒装|礼盒|}",
            "{周黑鸭|绝味|王小卤|煌上煌} {鸭脖|鸭锁骨|虎皮凤爪|卤鸭翅} {100g|200g|300g|500g} {甜辣|香辣|微辣|} {真空包装|}",
        ),
    ),
    "groceries": (
        10,
        "{家用|商用|新货|产地直发|顺丰冷链|坏果包赔|厨房调味}",
        (
            "{金龙鱼|福临门|十月稻田|柴火大院|太粮|北大荒|五常} {五常大米|长粒香大米|东北大米|泰国香米|稻花香大米|丝苗米|糙米} {2.5kg|5kg|10kg|25kg} {真空包装|新米|当季新米|}",
            "{金龙鱼|鲁花|福临门|多力|长寿花|西王|胡姬花} {5S压榨一级花生油|葵花籽油|玉米油|非转基因大豆油|橄榄油|菜籽油|稻米油} {900ml|1.8L|4L|5L|5.436L|6.18L}",
            "{海天|李锦记|千禾|厨邦|加加|六月鲜|恒顺|老干妈|太太乐} {生抽|老抽|蚝油|零添加酱油|陈醋|香醋|料酒|鸡精|风味豆豉辣椒酱|鲜味汁} {200g|280g|500ml|1.28L|1.9L|1kg}*{1|2|3|6}{瓶|袋|罐}",
            "{烟台|阿克苏|洛川|静宁|昭通} 红富士苹果 {3斤|5斤|9斤|10斤} {单果75-80mm|单果80-85mm|单果85mm+|} 新鲜水果 {当季|脆甜|}",
            "{海南 贵妃芒|广西 金煌芒|广西 沃柑|四川 耙耙柑|赣南 脐橙|智利 车厘子 JJ级|泰国 金枕榴莲|越南 红心火龙果|山东 麒麟西瓜|云南 蓝莓} {2斤|3斤|5斤|8斤|9斤|1个} {新鲜水果|整箱|现摘现发|}",
            "{黄天鹅|德青源|圣迪乐村|正大} {可生食鸡蛋|无抗鲜鸡蛋|散养土鸡蛋|富硒鸡蛋} {10枚|20枚|30枚|40枚} {礼盒装|1.59kg|}",
            "{恒都|科尔沁|大庄园|元盛|正大|圣农|大希地} {原切牛腱子|牛排|羊肉卷|牛腩|鸡胸肉|鸡翅中|五花肉|整切西冷牛排} {500g|1kg|2kg|500g*4袋|1.2kg/10片} 冷冻 {生鲜|健身|}",
            "{獐子岛|国联|禧美|渔传播|京东生鲜} {黑虎虾|大闸蟹 公4.0两 母3.0两|三文鱼刺身|帝王蟹|鲜活小龙虾|鳕鱼块|扇贝肉} {400g|500g|1kg|8只|1.5kg} {冷冻|鲜活|}",
            "{金沙河|香雪|五得利|陈克明} {高筋小麦粉|饺子粉|中筋面粉|鸡蛋挂面|全麦粉} {500g|1kg|2.5kg|5kg}*{1|2|4}袋",
            "{思念|三全|湾仔码头|必品阁} {水饺 猪肉白菜|水饺 三鲜|汤圆 黑芝麻|馄饨 荠菜猪肉|王饺子} {500g|720g|1kg|1.32kg} 速冻 {早餐|}",
        ),
    ),
    "phones": (
        10,
        "{官方标配|国行正品|全网通|分期免息|以旧换新|顺丰速发|拍照手机|游戏手机|学生}",
        (
            "Apple iPhone {15|15 Plus|15 Pro|15 Pro Max|16|16 Plus|16 Pro|16 Pro Max} {128GB|256GB|512GB|1TB} {黑色钛金属|原色钛金属|白色钛金属|沙漠色钛金属|白色|黑色|粉色|蓝色|群青色} 支持移动联通电信5G 双卡双待手机",
            "华为HUAWEI {Mate 60 Pro|Mate 60|Pura 70 Pro|Pura 70|nova 12 Pro|nova 12|Mate X5|Pocket 2} {12GB+256GB|12GB+512GB|12GB+1TB} {雅丹黑|雅川青|羽砂白|南糯紫|樱语粉} 鸿蒙智能手机",
            "小米Xiaomi {14|14 Pro|14 Ultra|Civi 4 Pro|Redmi K70|Redmi K70 Pro|Redmi Note 13 Pro|Redmi Turbo 3} {8GB+128GB|12GB+256GB|16GB+512GB|16GB+1TB} {黑色|白色|岩石青|雪山粉|冰钛|龙晶紫|墨羽|晴雪|暮光紫} 5G手机 {徕卡影像|骁龙8Gen3|}",
            "{OPPO Find X7|OPPO Find X7 Ultra|OPPO Reno11|一加OnePlus 12|一加Ace 3|vivo X100|vivo X100 Pro|vivo S18|iQOO 12|iQOO Neo9|荣耀HONOR Magic6|荣耀HONOR 100|真我realme GT5} {12GB+256GB|16GB+512GB|16GB+1TB} {曜石黑|冰川蓝|月光白|辰夜黑|落日橙|星际银} 5G手机",
            "Apple MacBook {Air|Pro} {13.6英寸|15.3英寸|14英寸|16英寸} {M2|M3|M3 Pro|M3 Max}芯片 {8GB|16GB|18GB|36GB}+{256GB|512GB|1TB} {午夜色|星光色|深空灰色|深空黑色|银色} 笔记本电脑",
            "{联想拯救者Y7000P|联想拯救者R9000P|联想小新Pro14|联想ThinkPad X1 Carbon|联想ThinkBook 14+|华硕天选5|华硕灵耀14|戴尔DELL灵越14|戴尔Alienware m16|惠普HP战66|惠普暗影精灵10|机械革命蛟龙16} {i5-13500H|i7-13700H|i9-14900HX|R7-7840H|R9-7945HX|Ultra 5 125H|Ultra 7 155H} {16G|32G} {512G|1T|2T} SSD {RTX4060|RTX4070|集显|} {2.5K|2.8K|3K}高刷屏 {游戏本|轻薄本|商务办公} 笔记本电脑",
            "{Apple iPad 10.9英寸|Apple iPad Air 11英寸|Apple iPad Pro 13英寸|Apple iPad mini 8.3英寸|华为MatePad 11.5英寸|华为MatePad Pro 13.2英寸|小米平板6 Pro 11英寸|小米Redmi Pad SE 11英寸|联想小新Pad Pro 12.7英寸} {WLAN版|蜂窝版|WiFi版} {8GB+128GB|128GB|256GB|512GB} {深空灰色|星光色|紫色|银色|曜石黑} 平板电脑",
            "{Apple Watch Series 9|Apple Watch Ultra 2|华为WATCH GT 4|华为WATCH 4 Pro|小米Xiaomi Watch S3|小米手环8 Pro|佳明Garmin Forerunner 265|OPPO Watch 4 Pro} {41mm|45mm|46mm|49mm|} {GPS版|蓝牙版|eSIM版|} {午夜色|星光色|黑色|银色|草木绿} 智能手表 {血氧心率监测|运动手环|}",
        ),
    ),
    "electronics": (
        10,
        "{官方标配|原装正品|适用苹果华为小米|升级款|2024新款|送收纳包|两年质保}",
        (
            "{Apple|华为HUAWEI|小米Xiaomi|OPPO|vivo|荣耀HONOR|三星Samsung} {iPhone 15 Pro|iPhone 16 Pro Max|Mate 60 Pro|Pura 70 Ultra|Xiaomi 14|Galaxy S24 Ultra|Find X7} {手机壳|钢化膜|镜头膜|磁吸保护壳} {透明防摔|MagSafe磁吸|全包硅胶|高清防指纹} {2片装|1个|}",
            "Apple AirPods {Pro 2|3|4|Max} {USB-C|MagSafe充电盒|Lightning} 无线蓝牙耳机 {主动降噪|空间音频|}",
            "{索尼SONY WH-1000XM5|索尼SONY WF-1000XM5|漫步者EDIFIER W820NB|漫步者Lolli Pro 3|华为HUAWEI FreeBuds Pro 3|小米Redmi Buds 5 Pro|Bose QuietComfort Ultra|森海塞尔Sennheiser MOMENTUM 4|Beats Studio Pro|JBL TUNE 770NC|QCY T13} {主动降噪|真无线|头戴式|入耳式} 蓝牙耳机 {黑色|白色|银色|象牙白|午夜蓝}",
            "{Anker安克|绿联UGREEN|倍思Baseus|小米Xiaomi|公牛BULL|酷态科CukTech|Apple} {20W|30W|35W|65W|100W|140W} {PD快充|氮化镓GaN|双口} 充电器 {Type-C|USB-C+USB-A|三口} {充电头|插头|}",
            "{Anker安克|绿联UGREEN|倍思Baseus|小米Xiaomi|罗马仕ROMOSS|酷态科CukTech|公牛BULL} 充电宝 {5000|10000|20000|25000|30000}mAh {22.5W|30W|65W|100W}快充 移动电源 {自带线|磁吸无线|超薄小巧|}",
            "{绿联UGREEN|倍思Baseus|Anker安克|Apple|小米Xiaomi} 数据线 {Type-C to C|USB-A to C|Lightning|C to Lightning} {0.5m|1m|1.5m|2m|3m} {60W|100W|240W|27W} {编织|快充线|}",
            "{罗技Logitech MX Master 3S 无线鼠标|罗技Logitech G502 HERO 游戏鼠标|罗技Logitech K380 蓝牙键盘|雷蛇Razer 蝰蛇V3 Pro 无线鼠标|雷蛇Razer 黑寡妇V4 机械键盘|达尔优EK87 机械键盘|小米Xiaomi 无线鼠标3|腹灵MK870 客制化键盘|Keychron K8 Pro 机械键盘} {黑色|白色|灰色} {办公|电竞|静音|}",
            "{闪迪SanDisk 酷豆 U盘|金士顿Kingston DTX U盘|闪迪SanDisk 至尊高速 TF存储卡} {64GB|128GB|256GB|512GB} {USB3.2|A2 V30|高速}",
            "{三星Samsung 990 PRO|三星Samsung T7 移动|致态ZhiTai TiPlus7100|西部数据WD SN770|海康威视HIKVISION C4000} 固态硬盘 {512GB|1TB|2TB|4TB} {M.2 NVMe PCIe4.0|USB3.2 Gen2|读速7000MB/s|}",
            "{希捷Seagate 睿翼|西部数据WD My Passport} 移动机械硬盘 {1TB|2TB|4TB|5TB} {USB3.0|2.5英寸|}",
            "{小米Xiaomi|TP-LINK|华为HUAWEI|华硕ASUS|网件NETGEAR|锐捷Ruijie} {AX3000|AX6000|BE3600|AX1500} {WiFi6|WiFi7|千兆|Mesh} 无线路由器 {双频|全屋覆盖|}",
            "{任天堂Nintendo Switch OLED|索尼PlayStation 5 Slim|Xbox Series X|Steam Deck OLED} {国行|日版|港版|} {游戏主机|掌机} {512GB|1TB|} {光驱版|数字版|}",
            "{佳能Canon EOS R50|佳能Canon EOS R6 Mark II|索尼SONY A7M4|索尼SONY ZV-E10|富士FUJIFILM X-S20|尼康Nikon Z30} {单机身|18-45mm套机|24-105mm套机} 微单相机 {4K视频|Vlog|}",
            "{大疆DJI Osmo Pocket 3 云台相机|大疆DJI Mini 4 Pro 无人机|大疆DJI Osmo Action 4 运动相机|GoPro HERO12 Black 运动相机|影石Insta360 X4 全景相机} {标准套装|畅飞套装|全能套装} {4K高清|}",
        ),
    ),
    "appliances": (
        8,
        "{家用|新一级能效|以旧换新|送装一体|国家补贴|免费安装|智能家电}",
        (
            "{小米Xiaomi|海信Hisense|TCL|创维Skyworth|索尼SONY|三星Samsung|雷鸟FFALCON|长虹CHANGHONG} {Redmi A|E5N|E8N Pro|T7K|Q10K|X90L|X95L|S7E|鹤6 Pro|QD-Mini LED|} {43|50|55|65|75|85|98|100}{英寸|寸} {4K超高清|Mini LED|QLED量子点|OLED} {60Hz|120Hz|144Hz|240Hz}高刷 智能液晶电视",
            "{格力GREE|美的Midea|海尔Haier|奥克斯AUX|小米Xiaomi|TCL|海信Hisense} {云佳|酷省电|静悦|巨省电|风酷|} {1匹|1.5匹|大1匹|2匹|3匹} {新一级能效|一级能效|三级能效} 变频冷暖 {挂机|立式柜机|} 空调 {KFR-26GW/NhGc1B|KFR-35GW/N8XHC1|KFR-35GW/BpR3PH|KFR-72LW/NhZc3W|}",
            "{海尔Haier|小天鹅|美的Midea|西门子SIEMENS|松下Panasonic|TCL|LG} {8公斤|10公斤|12公斤} {滚筒洗衣机|波轮洗衣机|洗烘一体机|热泵烘干机} {全自动|直驱变频|除菌螨|超薄嵌入} {EG100MATE35S|TG100V88WMUIADY5|WG54B6X00W|}",
            "{海尔Haier|美的Midea|容声Ronshen|西门子SIEMENS|卡萨帝Casarte|TCL|美菱MeiLing} {双开门|三门|四开门|十字对开门|法式多门} 冰箱 {216L|405L|470L|510L|535L|603L} {BCD-510WDPZM|BCD-470WGHTDD9DYU1|BCD-535WKPZM(E)|} {风冷无霜|一级能效|超薄嵌入式|}",
            "{美的Midea|苏泊尔SUPOR|九阳Joyoung|小熊Bear|飞利浦PHILIPS|摩飞Morphy Richards|东菱Donlim|北鼎Buydeem} {电饭煲|空气炸锅|破壁机|电热水壶|豆浆机|养生壶|电炖锅|多功能料理锅|面包机} {1L|1.5L|1.7L|3L|4L|5L|6.5L} {家用|智能预约|不锈钢|多功能|可视}",
            "{戴森Dyson V12 无线吸尘器|戴森Dyson V15 Detect 无线吸尘器|戴森Dyson Gen5 无线吸尘器|追觅dreame H30 洗地机|添可TINECO 芙万3.0 洗地机|石头Roborock G20 扫地机器人|科沃斯ECOVACS T30 扫拖一体机|云鲸Narwal J4 扫拖一体机|小米米家 扫拖机器人} {家用|大吸力|自动集尘|自清洁|}",
            "{飞利浦PHILIPS|松下Panasonic|戴森Dyson|小米米家|徕芬LAIFEN|博朗Braun|飞科FLYCO} {高速吹风机|电动剃须刀|负离子吹风机|卷发棒|鼻毛修剪器} {SE|S5000|HD15|7系|} {家用|大功率|速干|}",
            "{美的Midea|方太FOTILE|老板Robam|华帝VATTI|海尔Haier|A.O.史密斯|万和Vanward} {燃气热水器|电热水器|油烟机|燃气灶|洗碗机|净水器|蒸烤一体机} {13L|16L|60升|80升|13套|800G|} {一级能效|零冷水|变频恒温|侧吸式|}",
        ),
    ),
    "clothing": (
        10,
        "{宽松|修身|百搭|春秋款|夏季|冬季加厚|情侣装|新款|潮牌|透气}",
        (
            "{优衣库UNIQLO|ZARA|H&M|森马|海澜之家|太平鸟|GXG|Bananain蕉内|Champion|李宁|安踏|MO&Co.} {男装|女装|} {纯棉圆领短袖T恤|摇粒绒外套|直筒牛仔裤|轻薄羽绒服|连帽卫衣|休闲裤|Polo衫|牛津纺衬衫|针织开衫|冲锋衣|阔腿裤|碎花连衣裙|百褶半身裙|羊毛大衣|西装外套|工装裤|冰丝防晒衣|灯芯绒夹克|高领毛衣} {白色|黑色|藏青色|灰色|米色|卡其色|燕麦色|雾霾蓝|酒红色|墨绿色|焦糖色|浅粉|杏色|咖啡色|天蓝色} {S|M|L|XL|XXL|3XL|160/84A|165/88A|170/92A|175/96A|180/100A}",
            "{Nike Air Zoom Pegasus 40|Nike Air Force 1|Nike Dunk Low|adidas Ultraboost Light|adidas Samba OG|李宁 飞电3|李宁 超轻21|安踏 C202|New Balance 574|New Balance 530|ASICS GEL-KAYANO 30|特步 160X|361° 飞燃3|鸿星尔克 奇弹|匡威Converse Chuck 70|Vans Old Skool|彪马PUMA Suede} {跑步鞋|运动鞋|休闲鞋|板鞋|帆布鞋|篮球鞋} {男款|女款|男女同款} {35..46}码 {黑白|白色|黑色|灰蓝|米白|熊猫配色}",
            "{南极人|恒源祥|浪莎|猫人|蕉内|有棵树|三枪|红豆Hodo} {纯棉袜子|男士内裤|女士内裤|保暖内衣套装|船袜|中筒袜|运动文胸|睡衣家居服} {3条装|4条装|5双装|10双装|1套} {均码|M|L|XL|XXL|} {抗菌|吸汗透气|无痕|加绒|}",
            "{波司登|鸭鸭|雪中飞|高梵|始祖鸟ARC'TERYX|北面The North Face|骆驼CAMEL|探路者} {羽绒服|连帽羽绒服|轻薄羽绒马甲|冲锋衣|三合一冲锋衣|抓绒外套} {男款|女款} {90%白鸭绒|90%白鹅绒|防风防水|} {165/88A|170/92A|175/96A|180/100A|M|L|XL} {黑色|深蓝|卡其|雪松绿}",
            "{Coach蔻驰|MK Michael Kors|小CK|Charles&Keith|珑骧Longchamp} {托特包|斜挎包|手提包|钱包|水饺包} {中号|小号|} {牛皮|尼龙|} {黑色|棕色|米白}",
            "{新秀丽Samsonite|外交官Diplomat|小米90分|美旅AmericanTourister} {拉杆箱|登机箱|行李箱|双肩包} {20寸|24寸|26寸|28寸} {PC材质|万向轮|} {黑色|银色|蓝色}",
            "{卡西欧CASIO G-SHOCK|天梭TISSOT 力洛克|浪琴Longines 名匠|西铁城CITIZEN 光动能|精工SEIKO 5号|天王表 郎朗系列} {机械表|石英表|运动手表|腕表} {男士|女士|情侣} {38mm|40mm|42mm|} {钢带|皮带|}",
            "{周大福|周生生|老凤祥|六福珠宝|潘多拉Pandora|施华洛世奇Swarovski} {足金项链|黄金手镯|925银手链|转运珠|钻石戒指|古法金吊坠} {约2g|约5g|约10g|18K|} {送女友|生日礼物|}",
        ),
    ),
    "beauty": (
        9,
        "{正品|官方正品|礼盒装|送女友|生日礼物|中小样|补水保湿|敏感肌可用}",
        (
            "{雅诗兰黛Estee Lauder Advanced Night Repair 特润修护肌活精华露 小棕瓶|兰蔻Lancome Génifique 小黑瓶 精华肌底液|SK-II Facial Treatment Essence 神仙水|欧莱雅L'Oreal Revitalift 玻尿酸 精华液|珀莱雅 红宝石面霜|薇诺娜 舒敏保湿特护霜|OLAY玉兰油 超红瓶 面霜|LA MER海蓝之谜 Crème de la Mer 精华面霜|资生堂Shiseido 红腰子精华|修丽可SkinCeuticals CE精华|科颜氏Kiehl's Ultra Facial Cream 高保湿面霜|理肤泉La Roche-Posay B5修复霜|Clarins娇韵诗 Double Serum 双萃精华|自然堂 冰肌水} {15ml|30ml|50ml|75ml|100ml|160ml|230ml|50g} {正装|礼盒|套装|}",
            "{迪奥Dior 烈艳蓝金唇膏|圣罗兰YSL 小金条口红|阿玛尼Armani 红管唇釉|MAC魅可 子弹头口红|花西子 空气唇釉|完美日记 小细跟口红|香奈儿Chanel 可可小姐唇膏|汤姆福特TF 黑管口红|3CE 雾感唇泥|橘朵 唇釉} {#999|#1966|#405|#888|#316|M01|#16|#100|#620} {3.5g|3.2g|3g|2.5g} {哑光|滋润|丝绒|镜面}",
            "{雅诗兰黛Estee Lauder Double Wear 持妆粉底液|阿玛尼Armani Luminous Silk 粉底液|兰蔻Lancome Teint Idole 粉底液|花西子 蜜粉饼|毛戈平 光感隔离|卡姿兰 大眼睛睫毛膏|植村秀 砍刀眉笔|纪梵希Givenchy Prisme Libre 四宫格散粉|NARS Light Reflecting 裸光蜜粉饼|完美日记 动物眼影盘} {30ml|13g|10g|1号|2号|#1W1|#00|#1N1|} {遮瑕持久|控油|自然色|}",
            "{海飞丝|潘婷|清扬|飘柔|沙宣|多芬Dove|力士LUX|舒肤佳Safeguard|阿道夫|卡诗Kérastase|滋源|施华蔻Schwarzkopf} {去屑洗发水|丝质顺滑洗发露|护发素|沐浴露|香皂|发膜|洗护套装} {200ml|400ml|500ml|750ml|1L|115g*3块} {男士|女士|柠檬清香|持久留香|}",
            "{云南白药|高露洁Colgate|佳洁士Crest|舒适达Sensodyne|黑人DARLIE|冷酸灵|参半|好来} {美白|防蛀|抗敏感|清新口气|益生菌}牙膏 {90g|100g|120g|180g}*{2|3|4}支",
            "{飞利浦PHILIPS Sonicare HX6730|欧乐B Oral-B iO3|欧乐B Oral-B Pro4|小米米家 T300|usmile Y10|舒克} 电动牙刷 {声波震动|成人款|儿童款} {含2支刷头|情侣套装|}",
            "{香奈儿Chanel 可可小姐|迪奥Dior 真我|祖玛珑Jo Malone 英国梨与小苍兰|YSL 自由之水|爱马仕Hermès 大地|宝格丽Bvlgari 大吉岭茶|大卫杜夫 冷水} {淡香水|香水|香精} {EDT|EDP|} {30ml|50ml|100ml} {女士|男士|中性}",
            "{安热沙Anessa 小金瓶|碧柔Biore 水活防晒|理肤泉 大哥大|珂润Curel 面霜|芙丽芳丝freeplus 洁面|曼秀雷敦Mentholatum 润唇膏|至本 舒颜修护洁面|赫莲娜HR 黑绷带} {60ml|90ml|100g|40g|4g|50ml} {SPF50+ PA++++|氨基酸|保湿|}",
        ),
    ),
    "household": (
        8,
        "{整箱|囤货装|母婴可用|实惠装|家庭装|加厚|家用}",
        (
            "{维达Vinda|清风|心相印|洁柔C&S|得宝Tempo|植护|斑布BABO|舒洁Kleenex|五月花} 抽纸 {3层|4层|5层}{80|100|110|120|130|150}抽*{6|8|10|18|20|24}包 {超韧|原生木浆|本色竹浆|软抽|} {卫生纸|面巾纸|餐巾纸}",
            "{维达Vinda|清风|心相印|洁柔C&S|得宝Tempo|斑布BABO|舒洁Kleenex} 卷纸 {4层|5层}{120g|140g|160g|180g|200g}*{10|12|20|27|30}卷 {有芯|无芯} {卫生纸|厕纸|}",
            "{心相印|维达Vinda|全棉时代|植护|洁柔C&S|德佑} {湿巾|湿厕纸|厨房用纸|洗脸巾|棉柔巾} {40抽|75节|80抽|100抽}*{3|6|10|12}包",
            "{蓝月亮|立白|奥妙OMO|汰渍Tide|超能|碧浪|威露士Walch|活力28|金纺} {深层洁净洗衣液|薰衣草香洗衣液|洗衣凝珠|洗衣粉|内衣专用洗衣液|衣物消毒液|护理柔顺剂|彩漂液} {500g|1kg|2kg|3kg|52颗|3L}*{1|2|4}{瓶|袋|盒|桶} {机洗手洗|除菌除螨|持久留香|}",
            "{美丽雅|妙洁|家得宝|茶花|佳帮手} 垃圾袋 {45*50cm|50*60cm|60*70cm} {100只|150只|200只|300只} {加厚|手提式|抽绳式|自动收口}",
            "{白猫|立白|雕牌|威猛先生|滴露Dettol|蓝月亮|妙管家} {洗洁精|厨房重油污净|洁厕剂|消毒液|玻璃清洁剂|除菌喷雾} {500ml|1kg|1.5kg|2kg|2.5L}*{1|2|3}瓶 {柠檬|不伤手|除菌|}",
        ),
    ),
    "home": (
        7,
        "{新款|家用|ins风|高颜值|简约现代|耐用|送礼}",
        (
            "{富安娜|罗莱LUOLAI|水星家纺|梦洁|博洋|网易严选|南极人} {纯棉四件套|全棉床单被套|蚕丝被|乳胶枕|羽绒被|凉席三件套|记忆棉枕头|夏凉被} {1.5m床|1.8m床|2m床|200*230cm|单人|双人} {A类|60支长绒棉|100%桑蚕丝|} {灰色|浅蓝|米白|}",
            "{双立人ZWILLING|苏泊尔SUPOR|爱仕达ASD|炊大皇|WMF|张小泉} {不粘锅炒锅|菜刀套装|铸铁锅|汤锅|砧板|刀具7件套} {26cm|28cm|30cm|32cm|} {燃气灶适用|电磁炉通用|不锈钢|家用}",
            "{膳魔师THERMOS|象印ZOJIRUSHI|虎牌TIGER|乐扣乐扣LocknLock|富光} {保温杯|焖烧杯|保温壶|吸管杯} {350ml|480ml|500ml|750ml|1L} {316不锈钢|大容量|}",
            "{宜家IKEA|林氏家居|源氏木语|顾家家居|全友家居|网易严选|京东京造} {实木餐桌|布艺沙发|电脑椅|书桌|衣柜|床头柜|人体工学椅|升降桌|懒人沙发} {1.2m|1.4m|1.6m|1.8m|三人位|单人|} {北欧简约|原木风|奶油风|} {胡桃色|原木色|白色|灰色}",
        ),
    ),
    "baby": (
        6,
        "{新生儿|宝宝|婴儿|品牌直供|超值装|效期新鲜}",
        (
            "{帮宝适Pampers 一级帮|帮宝适Pampers 黑金帮|好奇Huggies 铂金装|好奇Huggies 心钻装|花王Merries|babycare 皇室|尤妮佳Moony|大王GOO.N|巴布豆} {纸尿裤|拉拉裤|成长裤} {NB|S|M|L|XL|XXL|XXXL}{30|44|52|58|62|76|84|96|120}片 {超薄透气|婴儿尿不湿|}",
            "{飞鹤 星飞帆|飞鹤 臻稚|惠氏Wyeth 启赋|美赞臣 蓝臻|爱他美Aptamil 卓萃|a2 至初|君乐宝 至臻|雅培Abbott 菁挚|伊利 金领冠} {1段|2段|3段|4段} 婴幼儿配方奶粉 {700g|800g|810g|900g}*{1|2|4|6}罐",
            "{全棉时代|babycare|心相印|可优比|十月结晶} {婴儿手口湿巾|婴儿湿巾|棉柔巾|干湿两用巾} {20抽|60抽|80抽|100抽}*{1|3|6|10|12}包",
            "{乐高LEGO 机械组 42151|乐高LEGO 城市系列 60365|布鲁可 拼装积木|费雪Fisher-Price 早教玩具|伟易达Vtech 学习机|美泰Mattel 芭比娃娃|孩之宝Hasbro 变形金刚|小猪佩奇 过家家玩具|奥迪双钻 遥控汽车} {3-6岁|6岁+|8岁+|1-3岁|} {男孩|女孩|儿童节礼物|生日礼物}",
            "{好孩子gb|babycare|Pouch|bebebus|elittle} {婴儿推车|儿童安全座椅|学步车|婴儿床|餐椅} {可坐可躺|轻便折叠|0-12岁|360度旋转|} {灰色|米白|蓝色}",
        ),
    ),
    "pets": (
        5,
        "{猫咪|狗狗|全价|营养|美毛|囤货}",
        (
            "{皇家ROYAL CANIN|渴望ORIJEN|麦富迪|网易严选|比瑞吉|伯纳天纯|卫仕|诚实一口|阿飞和巴弟|冠能ProPlan} {室内成猫粮|幼猫粮|全价成犬粮|小型犬幼犬粮|冻干双拼猫粮|全价无谷猫粮|金毛成犬粮|泰迪专用狗粮} {1.5kg|2kg|4.5kg|5.4kg|10kg|15kg} {鸡肉味|三文鱼味|牛肉味|六种鱼|}",
            "{pidan|许翠花|洁宠|N1|福丸|猫乐适} {豆腐猫砂|混合猫砂|膨润土猫砂|玉米猫砂} {2.4kg|6L|6kg|10kg}*{1|4|6}{包|袋} {低尘除臭|可冲厕所|结团快}",
            "{希宝Sheba|妙鲜包|伟嘉Whiskas|麦富迪|珍致Fancy Feast|网易严选|蓝氏} {猫罐头|猫条|冻干|主食罐} {15g|80g|85g|170g}*{12|20|24|30}{罐|包|支} {金枪鱼|鸡肉|三文鱼|}",
            "{小佩PETKIT|霍曼Homerun|CATLINK|Pidan|多尼斯} {全自动猫砂盆|自动喂食器|宠物饮水机|猫爬架|航空箱} {标准版|Pro|大号|} {智能APP控制|静音|}",
        ),
    ),
    "books": (
        4,
        "{正版书籍|图书|当当自营|京东图书|全新正版|新华书店}",
        (
            "{《三体》全集 刘慈欣|《活着》 余华|《明朝那些事儿》 当年明月|《人类简史》 赫拉利|《置身事内》 兰小欢|《百年孤独》 马尔克斯|《小王子》 圣埃克苏佩里|《红楼梦》 曹雪芹|《围城》 钱钟书|《平凡的世界》 路遥|《长安的荔枝》 马伯庸|《我与地坛》 史铁生|《哈利·波特》 J.K.罗琳|《杀死一只知更鸟》 哈珀·李} {平装|精装|典藏版|全3册|全7册|}",
            "{《Python编程：从入门到实践》 第3版|《深度学习》 花书|《动手学深度学习》 PyTorch版|《算法导论》 原书第3版|《机器学习》 周志华|《Effective Java》 中文版|《代码整洁之道》|《流畅的Python》 第2版|《深入理解计算机系统》 CSAPP|《大模型应用开发极简入门》|《Transformer自然语言处理实战》} {计算机|人工智能|编程入门|}",
            "{《五年高考三年模拟》|《小学生必背古诗词》|《新华字典》 第12版|《剑桥少儿英语》|《万物运转的秘密》|《DK儿童百科全书》|《米小圈上学记》|《神奇校车》} {一年级|三年级|高考|全套|套装|} {人教版|彩图注音版|2025版|}",
        ),
    ),
    "office_sports": (
        6,
        "{学生|办公|开学季|健身|户外|专业级|训练}",
        (
            "{晨光M&G|得力deli|百乐PILOT|斑马ZEBRA|三菱uni|国誉KOKUYO|真彩} {中性笔|按动中性笔|荧光笔|自动铅笔|笔记本|活页本|便利贴} {0.38mm|0.5mm|0.7mm|A5|B5|76*76mm} {黑色|蓝色|红色|} {3本装|12支装|20支装|}",
            "{得力deli|晨光M&G|齐心|亚太森博|绿天章} A4打印纸 {70g|80g} 500张/包 {1包|5包|8包}/箱 复印纸",
            "{Keep 瑜伽垫|迪卡侬DECATHLON 瑜伽垫|斯伯丁Spalding 篮球|威尔胜Wilson 篮球|尤尼克斯YONEX 羽毛球拍|李宁 羽毛球|红双喜DHS 乒乓球拍|摩腾Molten 排球|Keep 跳绳|迪卡侬DECATHLON 哑铃} {6mm|8mm|10mm|7号|5号|4U|3U|12只装|5kg*2|} {加宽防滑|室内外|碳素|耐打|可调节}",
            "{凯乐石KAILAS|牧高笛MOBIGARDEN|挪客Naturehike|迪卡侬DECATHLON|骆驼CAMEL|黑冰BLACKICE|探路者} {帐篷|睡袋|登山杖|登山包|户外折叠椅|天幕|冲锋裤} {3-4人|2人|45L|60L|碳纤维|-10°C|} {防雨|超轻|自动速开|}",
            "{捷安特GIANT|美利达MERIDA|喜德盛XDS|迪卡侬DECATHLON} {山地自行车|公路车|折叠自行车} {24寸|26寸|27.5寸|700C} {21速|27速|禧玛诺变速} {黑色|白色|哑光灰}",
            "{九号Ninebot|雅迪Yadea|爱玛Aima|小牛NIU} {电动自行车|电动滑板车|电动摩托车} {48V|60V|} {新国标|长续航|} {黑色|白色|薄荷绿}",
        ),
    ),
    "health": (
        5,
        "{成人|中老年|官方正品|营养补充|家庭常备|效期2026年}",
        (
            "{汤臣倍健|Swisse|善存Centrum|钙尔奇Caltrate|朵拉朵尚|养生堂|GNC|Blackmores澳佳宝|life space} {多种维生素|维生素C片|钙片|鱼油软胶囊|益生菌|蛋白粉|叶黄素|胶原蛋白肽|辅酶Q10|褪黑素} {60片|100片|120粒|200粒|30袋|450g|1000mg} {成人|中老年|孕妇|儿童|}",
            "{鱼跃yuwell|欧姆龙OMRON|可孚|九安} {电子血压计|血糖仪|红外体温计|制氧机|雾化器} {U807|HEM-7136|YE680A|} {家用|医用|}",
            "{稳健医疗|振德|海氏海诺|3M|云南白药} {医用外科口罩|一次性医用口罩|N95口罩|创可贴|医用棉签} {10只|50只|100片|200支} {独立包装|}",
            "{东阿阿胶 阿胶块|同仁堂 西洋参片|宁夏中宁 枸杞子|燕之屋 即食燕窝|小仙炖 鲜炖燕窝|云南白药 三七粉|方家铺子 黑芝麻丸} {100g|250g|500g|45g*6瓶} {礼盒|罐装|特级|}",
        ),
    ),
    "auto": (
        3,
        "{汽车用品|通用型|车载|四季通用|专车专用}",
        (
            "{70迈|360|盯盯拍|小米米家|凌度BLACKVIEW} 行车记录仪 {A800S|M500|G300|4K|2K} {前后双录|高清夜视|停车监控|} {64G卡|128G卡|}",
            "{美孚Mobil 1号|壳牌Shell 超凡喜力|嘉实多Castrol 极护} 全合成机油 {0W-20|5W-30|0W-40} {1L|4L} SP级",
            "{龟牌Turtle Wax|车仆|3M} {玻璃水|洗车液|车蜡|镀晶剂} {2L*4瓶|1L|500ml} {-25°C|去油膜|}",
            "{米其林MICHELIN|普利司通Bridgestone|固特异Goodyear|马牌Continental} 汽车轮胎 {205/55R16|225/45R17|235/55R19} {91V|94W|} {静音|}",
        ),
    ),
}

CHOICE = re.compile(r"\{([^{}]*)\}")
INT_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")
CATEGORIES = tuple(CATALOG)
WEIGHTS = tuple(CATALOG[name][0] for name in CATEGORIES)


def pick(options: str, rng: random.Random) -> str:
    """Resolve one ``{...}`` group: a ``lo..hi`` range or ``a|b|c`` options."""
    bounds = INT_RANGE.match(options)
    if bounds:
        return str(rng.randint(int(bounds[1]), int(bounds[2])))
    return rng.choice(options.split("|"))


def expand(template: str, rng: random.Random) -> str:
    """Fill every choice group of ``template`` and normalise spacing."""
    filled = CHOICE.sub(lambda m: pick(m[1], rng), template)
    return " ".join(filled.split())


def new_title(rng: random.Random) -> str:
    """Draw a category by weight, expand one of its templates, decorate it."""
    category = rng.choices(CATEGORIES, weights=WEIGHTS)[0]
    _, features, templates = CATALOG[category]
    title = expand(rng.choice(templates), rng)
    if rng.random() < FEATURE_RATE:
        title = f"{title} {expand(features, rng)}"
    if rng.random() < SUFFIX_RATE:
        title = f"{title} {expand(SUFFIX, rng)}"
    if rng.random() < PREFIX_RATE:
        title = expand(PREFIX, rng) + title
    return title


def generate(seed: int, target_chars: int) -> str:
    """Return the corpus: one title per line until ``target_chars`` is reached."""
    rng = random.Random(seed)
    lines: list[str] = []
    size = 0
    while size < target_chars:
        repeat = bool(lines) and rng.random() < REPEAT_RATE
        title = rng.choice(lines) if repeat else new_title(rng)
        lines.append(title)
        size += len(title) + 1  # + newline
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write the synthetic order-item corpus.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output file")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument("--chars", type=int, default=DEFAULT_CHARS, help="target characters")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    text = generate(args.seed, args.chars)
    args.out.write_text(text, encoding="utf-8", newline="\n")
    lines = text.count("\n")
    print(f"{args.out}: {lines} lines, {len(text)} characters", file=sys.stderr)


if __name__ == "__main__":
    main()
